"""CoIn Audit REST service: a thin FastAPI layer over the `auditor` protocol library (DESIGN §2, §4)."""
