"""proget-gateway: an authenticating reverse proxy for Inedo ProGet."""

__version__ = "0.1.0"
