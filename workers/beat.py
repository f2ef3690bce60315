"""Celery beat schedule: the periodic jobs that keep audits moving without any message in flight."""

from typing import Any

from api.settings import Settings
from workers.names import EXPIRE_CHALLENGES, LINK_EVENTS, QUEUE_OF_TASK, SWEEP_AUDITS


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "expire-overdue-challenges": {
            "task": EXPIRE_CHALLENGES,
            "schedule": settings.expire_interval_seconds,
            "options": {
                "queue": QUEUE_OF_TASK[EXPIRE_CHALLENGES],
                "expires": settings.expire_interval_seconds,
            },
        },
        "sweep-stuck-audits": {
            "task": SWEEP_AUDITS,
            "schedule": settings.sweep_interval_seconds,
            "options": {"queue": QUEUE_OF_TASK[SWEEP_AUDITS], "expires": settings.sweep_interval_seconds},
        },
        "link-pending-events": {
            "task": LINK_EVENTS,
            "schedule": settings.sweep_interval_seconds,
            "options": {"queue": QUEUE_OF_TASK[LINK_EVENTS], "expires": settings.sweep_interval_seconds},
        },
    }
