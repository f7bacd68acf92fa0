"""Territorial coordination, pure: the resource directory's ranking (no Kafka, no web framework)."""
