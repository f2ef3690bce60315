"""Background jobs: each declared once, with its name and queue, and handed off after the commit.

`@job(name, queue=..., every=...)` turns a function `(context, *args)` into a `Job` and registers it.
The registry is what the Celery app (`workers/app.py`) makes tasks of, what beat schedules (the jobs
with a period) and what the dispatcher sends by name; on the embedded default (no broker) the
dispatcher runs the job in this process, inline, once the request's transaction has committed.
Either way a lost hand-off costs nothing but time: the audit's state is in the database and the
sweeper re-enqueues it.
"""

import enum
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog
from celery import Celery
from sqlalchemy.orm import Session

from service.database import after_commit
from service.metrics import JOB_FAILURES
from service.settings import Settings

if TYPE_CHECKING:
    from service.context import ServiceContext

log = structlog.get_logger(__name__)


class Queue(enum.StrEnum):
    CPU = "cpu"
    GPU = "gpu"  # verification embeds tokens; a GPU machine's worker consumes this queue


R = TypeVar("R")  # what a job's function returns: calling the job returns it too


@dataclass(frozen=True)
class Job(Generic[R]):
    """A background job: `run(context, *args)`, sent to `queue` as the task `name`; `every` gives the
    period (seconds, from the settings) of a job that beat runs on a schedule."""

    name: str
    queue: Queue
    run: Callable[..., R]
    every: Callable[[Settings], float] | None = None

    def __call__(self, context: "ServiceContext", *args: str) -> R:
        try:
            return self.run(context, *args)
        except Exception:
            JOB_FAILURES.labels(self.name).inc()
            raise


_REGISTRY: dict[str, Job[Any]] = {}

# The modules that declare jobs: importing them fills the registry.
JOB_MODULES = (
    "service.audits.workflow",
    "service.events",
    "service.integrity",
    "service.scheduling.draws",
    "service.webhooks.service",
)


def job(
    name: str, *, queue: Queue = Queue.CPU, every: Callable[[Settings], float] | None = None
) -> Callable[[Callable[..., R]], Job[R]]:
    def register(function: Callable[..., R]) -> Job[R]:
        if name in _REGISTRY:
            raise RuntimeError(f"job {name!r} is declared twice")
        declared = Job(name, queue, function, every)
        _REGISTRY[name] = declared
        return declared

    return register


def registered_jobs() -> dict[str, Job[Any]]:
    """Every job of the service, by name."""
    for module in JOB_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)


def celery_app(settings: Settings) -> Celery:
    """A Celery app with the broker settings that producers (the API) and consumers (the workers) share.

    Delivery is at-least-once (late acknowledgement, re-queue when the worker process dies) and every job
    is idempotent against the database, which is the source of truth."""
    celery = Celery("coin", broker=settings.broker_url or "memory://", set_as_current=False)
    transport: dict[str, Any] = {"visibility_timeout": settings.broker_visibility_timeout_seconds}
    if settings.broker_key_prefix:
        transport["global_keyprefix"] = settings.broker_key_prefix
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=Queue.CPU.value,
        task_soft_time_limit=settings.task_soft_time_limit_seconds,
        task_time_limit=settings.task_time_limit_seconds,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        # A publish after a commit must not hang a request when Redis is down: the sweeper re-sends.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        worker_hijack_root_logger=False,
    )
    return celery


class Dispatcher:
    """Hands jobs to the workers (or runs them inline on the embedded default) after the commit."""

    def __init__(self, context: "ServiceContext") -> None:
        self._context = context

    @cached_property
    def _celery(self) -> Celery:
        return celery_app(self._context.settings)

    def enqueue(self, session: Session, job: Job[Any], *args: str) -> None:
        """Send `job(*args)` once `session`'s unit of work has committed."""
        after_commit(session, partial(self.send_now, job, *args))

    def send_now(self, job: Job[Any], *args: str) -> None:
        try:
            if self._context.settings.embedded:
                job(self._context, *args)
            else:
                self._celery.send_task(job.name, args=list(args), queue=job.queue.value)
        except Exception:
            # The commit stands; the sweeper re-enqueues whatever this hand-off failed to start.
            log.exception("job.handoff_failed", job=job.name, args=list(args))
