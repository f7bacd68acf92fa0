"""Who may speak to Kafka: principals, their secrets, the ACLs that follow from the catalogue."""
