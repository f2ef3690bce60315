"""Prometheus metrics of the API process (served at /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "coin_http_requests_total", "HTTP requests by route template and status", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram("coin_http_request_seconds", "HTTP request latency by route template", ["route"])
REPORTS = Counter(
    "coin_reports_total", "Reports submitted, by outcome: stored, replayed, conflict, invalid", ["outcome"]
)
AUDITS_BY_STATUS = Gauge("coin_audits", "Audits in the store by status (read at scrape time)", ["status"])
OPEN_CHALLENGES = Gauge("coin_open_challenges", "Challenges waiting for a provider (read at scrape time)")
