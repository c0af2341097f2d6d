"""The worker: the Faust app that reads intents in batches, looks their facts
up, decides with the core and publishes decisions and audit records; its web
endpoints (check API, health, metrics)."""
