"""Alembic migrations of the audit store (`coin migrate` runs them; see `service/migrate.py`)."""
