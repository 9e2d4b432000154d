"""Message envelope and transports (Kafka, embedded) shared by every service."""
