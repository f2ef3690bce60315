"""The audits resource: opening audits, reading their state and signed verdicts."""
