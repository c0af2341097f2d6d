"""callguard: a real-time guard for outbound calls."""

__version__ = "0.1.0"
