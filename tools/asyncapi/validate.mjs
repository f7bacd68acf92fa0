// Validate AsyncAPI documents with the official parser (and its Avro schema parser).
// Usage: node validate.mjs <file.json>...  Prints each diagnostic; exits 1 on any error.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";
import { AvroSchemaParser } from "@asyncapi/avro-schema-parser";

const parser = new Parser();
parser.registerSchemaParser(AvroSchemaParser());
let failed = false;
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"));
  for (const d of diagnostics) {
    const level = ["error", "warning", "info", "hint"][d.severity] ?? d.severity;
    console.log(`${file}: ${level}: ${d.code}: ${d.message} at ${d.path.join(".")}`);
  }
  if (!document || diagnostics.some((d) => d.severity === 0)) {
    failed = true;
    console.log(`${file}: INVALID`);
  } else {
    console.log(`${file}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ${document.operations().length} operations, ${document.components().messages().length} messages`);
  }
}
process.exit(failed ? 1 : 0);
