"""The Celery application (`celery -A workers.app worker -Q cpu,gpu`).

Delivery is at-least-once (late acknowledgement, re-queue when the worker process dies) and every task
is idempotent against the database, which is the source of truth: a duplicate message finds the audit
already moved on and does nothing.
"""

from celery import Celery

from api.settings import Settings, get_settings
from workers.beat import beat_schedule
from workers.names import QUEUE_CPU, QUEUE_OF_TASK


def make_celery(settings: Settings) -> Celery:
    celery = Celery("coin", broker=settings.broker_url or "memory://", include=["workers.tasks"])
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=QUEUE_CPU,
        task_routes={name: {"queue": queue} for name, queue in QUEUE_OF_TASK.items()},
        task_soft_time_limit=settings.task_soft_time_limit_seconds,
        task_time_limit=settings.task_time_limit_seconds,
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout_seconds},
        broker_connection_retry_on_startup=True,
        # A publish after a commit must not hang a request when Redis is down: the sweeper re-sends.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        beat_schedule=beat_schedule(settings),
        worker_hijack_root_logger=False,
    )
    return celery


app = make_celery(get_settings())
