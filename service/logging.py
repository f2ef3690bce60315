"""Structured logs for the API, the workers and the CLI (structlog).

Events have dotted names (`audit.verdict`, `report.stored`, `http.request`) and carry the ids they are
about (`audit_id`, `report_id`, `provider_id`) and, inside a request, its `request_id`. Outside
development every line is one JSON object; in development they are rendered for a terminal. Records of
other libraries (uvicorn, Celery, SQLAlchemy) go through the same processors. A field whose name says
it holds a secret is masked before anything is written.
"""

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor

from service.settings import Settings

# Field names that may never reach a log line with their value.
SECRET_FIELDS = frozenset(
    {
        "authorization",
        "api_key",
        "token",
        "receipt_token",
        "secret",
        "secret_key",
        "signing_key",
        "admin_token",
    }
)


def mask_secrets(_: Any, __: str, event: EventDict) -> EventDict:
    for name in SECRET_FIELDS.intersection(event):
        event[name] = "***"
    return event


def configure_logging(settings: Settings, level: int = logging.INFO) -> None:
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_secrets,
    ]
    renderer: Processor = (
        structlog.dev.ConsoleRenderer() if settings.is_development else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
