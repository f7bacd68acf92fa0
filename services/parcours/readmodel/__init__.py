"""The read model of the partner edge: views, inboxes, observatory and webhook registrations
read back from Kafka. The adapters serve it; the validator checks partners' writes against it."""
