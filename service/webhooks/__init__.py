"""Webhooks to the auditor's staff: signed, retried, every attempt recorded."""
