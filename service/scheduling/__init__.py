"""Scheduled verification: sampling policies, their escalation, and the keyed draw of audits."""
