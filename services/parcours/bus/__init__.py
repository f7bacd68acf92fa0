"""The bus: how Parcours reaches Kafka (`kafkaio`), publishes with acks=all (`publisher`) and
decides idempotency keys on a topic (`idempotency`). Its failures are `bus.errors`, never HTTP
answers: the HTTP layer maps them to statuses (`adapters.http.answers`)."""
