"""Kafka: topics and what the ACLs allow, batched publishing, exactly-once
transactions and consumer lag."""
