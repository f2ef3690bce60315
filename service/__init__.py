"""The service core: what the API and the workers share — settings, the store, the audit trail,
the job registry and each domain's service logic. It never imports `api` or `workers`."""
