// The conformance tier's one JVM: HAPI FHIR's instance validator over many R4 resources, offline.
//
//   java -cp '<jars>/*' Validate.java <definitions folder> <resources folder>
//
// Loads the base R4 (4.0.1) definitions (hapi-fhir-validation-resources-r4), the common code
// systems HAPI knows without a server, and every StructureDefinition and CodeSystem in
// <definitions folder> (the project's own, snapshots generated here), then validates each *.json of
// <resources folder> and prints one JSON object per line: {"file", "issues": [{"severity",
// "location", "message", "id"}]}. No terminology server is configured: nothing leaves the machine.

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.ValidationSupportContext;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.CodeSystem;
import org.hl7.fhir.r4.model.StructureDefinition;
import org.hl7.fhir.r4.model.ValueSet;

public class Validate {
    public static void main(String[] args) throws Exception {
        FhirContext ctx = FhirContext.forR4();
        PrePopulatedValidationSupport own = new PrePopulatedValidationSupport(ctx);
        try (Stream<Path> files = Files.list(Path.of(args[0]))) {
            for (Path p : files.filter(f -> f.toString().endsWith(".json")).sorted().toList()) {
                IBaseResource res = ctx.newJsonParser().parseResource(Files.readString(p, StandardCharsets.UTF_8));
                if (res instanceof StructureDefinition sd) own.addStructureDefinition(sd);
                else if (res instanceof CodeSystem cs) own.addCodeSystem(cs);
                else if (res instanceof ValueSet vs) own.addValueSet(vs);
            }
        }
        ValidationSupportChain chain = new ValidationSupportChain(
            new DefaultProfileValidationSupport(ctx), own, new SnapshotGeneratingValidationSupport(ctx),
            new CommonCodeSystemsTerminologyService(ctx), new InMemoryTerminologyServerValidationSupport(ctx));
        FhirInstanceValidator instance = new FhirInstanceValidator(chain);
        instance.setNoTerminologyChecks(false);
        instance.setAnyExtensionsAllowed(true); // unknown extensions are reported (information), not refused
        // profiles of implementation guides that cannot be fetched offline (the Subscriptions backport):
        // reported as warnings, "could not be found", not as errors of the resource
        instance.setErrorForUnknownProfiles(false);
        FhirValidator validator = ctx.newValidator().registerValidatorModule(instance);
        // each own StructureDefinition's snapshot, as the validator builds it to check instances
        // (its instance validation of a differential-only StructureDefinition cannot find the base
        // definitions' package here: the snapshot generation is the check that counts)
        SnapshotGeneratingValidationSupport snapshots = new SnapshotGeneratingValidationSupport(ctx);
        for (IBaseResource r : own.fetchAllStructureDefinitions()) {
            StructureDefinition sd = (StructureDefinition) r;
            String problem = null;
            try {
                IBaseResource done = snapshots.generateSnapshot(new ValidationSupportContext(chain), sd.copy(), sd.getUrl(), null, sd.getName());
                if (done == null || !((StructureDefinition) done).hasSnapshot() || ((StructureDefinition) done).getSnapshot().getElement().size() < 4)
                    problem = "no snapshot generated";
            } catch (Exception e) {
                problem = String.valueOf(e.getMessage());
            }
            System.out.println("{\"file\":" + quote("snapshot__" + sd.getIdElement().getIdPart()) + ",\"issues\":["
                + (problem == null ? "" : "{\"severity\":\"error\",\"location\":\"StructureDefinition\",\"message\":" + quote(problem) + ",\"id\":\"snapshot\"}")
                + "]}");
        }
        List<Path> resources;
        try (Stream<Path> files = Files.list(Path.of(args[1]))) {
            resources = files.filter(f -> f.toString().endsWith(".json")).sorted().toList();
        }
        StringBuilder out = new StringBuilder();
        for (Path p : resources) {
            ValidationResult result = validator.validateWithResult(Files.readString(p, StandardCharsets.UTF_8));
            out.setLength(0);
            out.append("{\"file\":").append(quote(p.getFileName().toString())).append(",\"issues\":[");
            boolean first = true;
            for (SingleValidationMessage m : result.getMessages()) {
                out.append(first ? "" : ",").append("{\"severity\":").append(quote(m.getSeverity().getCode()))
                   .append(",\"location\":").append(quote(m.getLocationString()))
                   .append(",\"message\":").append(quote(m.getMessage()))
                   .append(",\"id\":").append(quote(m.getMessageId())).append('}');
                first = false;
            }
            System.out.println(out.append("]}"));
        }
    }

    private static String quote(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> { if (c < 0x20) b.append(String.format("\\u%04x", (int) c)); else b.append(c); }
            }
        }
        return b.append('"').toString();
    }
}
