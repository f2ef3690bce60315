"""`coin demo`: simulated providers (`providers`) push real traces through the REST API (`run`)."""
