"""The FHIR R4 bridge's pure part: FHIR resources in, the contract's events out; views and
notifications out as FHIR (Bundle, OperationOutcome, the Subscriptions backport). Built on the
`fhir.resources` models (R4B, the R4 technical correction); no Kafka client, no web framework."""
