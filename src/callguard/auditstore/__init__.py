"""The durable audit store: ``callguard.audit`` copied into PostgreSQL and
searchable by callee."""
