"""Territorial coordination, pure: the resource directory's ranking, the admission commission's
states (no Kafka, no web framework)."""
