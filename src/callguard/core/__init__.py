"""The functional core: the contract, the facts, the rules and the pure half of
the audit chain. A decision is a pure function of (intent, facts, clock), so a
test, a replay or a regulator can run it anywhere: nothing here imports a
Redis, Kafka, Faust or PostgreSQL client (checked by ``./dev test``)."""
