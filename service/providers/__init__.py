"""Providers and their API keys."""
