"""The embedded development broker: a real Apache Kafka from Maven Central jars."""
