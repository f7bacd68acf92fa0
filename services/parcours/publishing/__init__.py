"""Who may publish what: the rules of the domain for every entry point (the HTTP edge and the
Kafka ingress), raising domain errors that each entry point maps (to a status, to a dead-letter
reason). No HTTP, no Kafka client here."""
