"""Prometheus metrics of the service (served by the API at /metrics, behind a bearer token).

With `--workers N` each API process counts only its own requests; set PROMETHEUS_MULTIPROC_DIR (an
empty directory shared by the API processes, and by the Celery workers on the same host) and /metrics
aggregates every process (`prometheus_client` multiprocess mode). Gauges read from the store at scrape
time keep the most recent value, whichever process set it.
"""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "coin_http_requests_total", "HTTP requests by route template and status", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram("coin_http_request_seconds", "HTTP request latency by route template", ["route"])
REPORTS = Counter(
    "coin_reports_total", "Reports submitted, by outcome: stored, replayed, conflict, invalid", ["outcome"]
)
RATE_LIMITED = Counter(
    "coin_rate_limited_total",
    "Requests refused with 429, by limit: key, address, auth_failures, in_flight",
    ["limit"],
)
JOB_FAILURES = Counter("coin_job_failures_total", "Background jobs that raised, by job", ["job"])
VERIFICATION_SECONDS = Histogram(
    "coin_verification_seconds",
    "Time to verify one round of an audit (checks 1-8), in the worker",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)
SWEEPER_REQUEUES = Counter(
    "coin_sweeper_requeues_total",
    "Audits the sweeper re-enqueued (their lease went stale), by status",
    ["status"],
)

# Read from the store (or the broker) when /metrics is scraped.
AUDITS_BY_STATUS = Gauge(
    "coin_audits", "Audits in the store by status", ["status"], multiprocess_mode="mostrecent"
)
STALE_AUDITS = Gauge(
    "coin_audits_stale",
    "Audits in a working state whose lease is stale: the sweeper's next catch (stays above 0: no worker)",
    multiprocess_mode="mostrecent",
)
OPEN_CHALLENGES = Gauge(
    "coin_open_challenges", "Challenges waiting for a provider", multiprocess_mode="mostrecent"
)
VERDICTS = Gauge(
    "coin_verdicts", "Verdicts in the store by outcome", ["outcome"], multiprocess_mode="mostrecent"
)
PENDING_EVENTS = Gauge(
    "coin_pending_events",
    "Events committed but not yet linked into the audit trail",
    multiprocess_mode="mostrecent",
)
QUEUE_DEPTH = Gauge(
    "coin_queue_depth",
    "Task messages waiting in each broker queue",
    ["queue"],
    multiprocess_mode="mostrecent",
)
INTEGRITY_PROBLEMS = Gauge(
    "coin_integrity_problems",
    "Problems the last integrity check found in the audit trail and the rows it vouches for",
    multiprocess_mode="mostrecent",
)
INTEGRITY_CHECKED = Gauge(
    "coin_integrity_checked_timestamp_seconds",
    "When the last integrity check ran (Unix time)",
    multiprocess_mode="mostrecent",
)
