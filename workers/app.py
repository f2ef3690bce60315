"""The Celery application: one task per registered job, beat's schedule from the same registry.

`coin worker` runs `celery -A workers.app worker -Q cpu,gpu`; `coin beat` runs its scheduler. Nothing
here decides anything about an audit: the jobs (`service.jobs`) do, against the database.
"""

import os
from functools import cache
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from service.context import ServiceContext
from service.jobs import Job, celery_app, registered_jobs
from service.logging import configure_logging
from service.settings import Settings, get_settings


@cache
def worker_context() -> ServiceContext:
    """One context per worker process, built lazily so a forked child never shares its parent's pool."""
    return ServiceContext.from_settings(get_settings())


def _task(job: Job[Any]) -> Any:
    def run(*args: str) -> object:
        return job(worker_context(), *args)

    run.__name__ = run.__qualname__ = job.run.__name__
    run.__doc__ = job.run.__doc__
    return run


def make_celery(settings: Settings) -> Celery:
    app = celery_app(settings)
    jobs = registered_jobs()
    for job in jobs.values():
        # Late acknowledgement, re-queue on a lost worker and the time limits are the app's (`celery_app`),
        # so every task has them.
        app.task(
            name=job.name,
            shared=False,  # a task of this app only (Celery shares tasks with every app by default)
        )(_task(job))
    app.conf.task_routes = {job.name: {"queue": job.queue.value} for job in jobs.values()}
    app.conf.beat_schedule = {
        job.name: {
            "task": job.name,
            "schedule": job.every(settings),
            # A run that waited longer than one period is superseded by the next.
            "options": {"queue": job.queue.value, "expires": job.every(settings)},
        }
        for job in jobs.values()
        if job.every is not None
    }
    return app


def _limit_torch_threads(**_: object) -> None:
    # Several pool processes on one machine must not each claim every core for torch.
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def _preload_models(**_: object) -> None:
    from service.audits.verification import preload_models

    preload_models(worker_context().settings)


worker_process_init.connect(_limit_torch_threads, weak=False)
worker_process_init.connect(_preload_models, weak=False)

configure_logging(get_settings())
app = make_celery(get_settings())
