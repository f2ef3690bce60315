"""Celery workers of the audit service: draw challenges, verify responses, expire and sweep (DESIGN §2)."""
