"""CoIn Audit: the byte-exact protocol (`protocol`), the semantic checks built on it (`semantic`),
the research harness that trains and evaluates them (`research`) and the `coin` command (`cli`).

This package imports no web, database or queue code; the service core (`service`) builds on it.
"""
