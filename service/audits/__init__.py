"""Audits: how they are opened and answered, the state machine the jobs run, verdicts."""
