"""The providers resource: registration and API keys (auditor admin)."""
