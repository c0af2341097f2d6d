"""Development only: the embedded broker, Redis and PostgreSQL, and the demo."""
