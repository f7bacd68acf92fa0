"""The FHIR R4 bridge's pure part: FHIR resources in, the contract's events out; views and
notifications out as FHIR (Bundle, OperationOutcome, the Subscriptions backport). Built on the
R4 (4.0.1) definitions (`r4`: fhirkit and the R4 invariants), read through `fhir.resources`' classes;
no Kafka client, no web framework."""
