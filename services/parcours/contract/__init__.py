"""The event contract: Avro schemas (source of truth), pydantic models, the Kafka codec. No Kafka import."""
