"""The HTTP edge of an adapter, split by concern: `app` (the application), `deps` (what routes
use), `answers` (refusals and their statuses), `openapi`, `metrics`, `submit` (the use case's
HTTP side) and one module per group of routes, `fhir` among them."""
