"""Celery tasks: thin wrappers that run a job of `workers/jobs.py` with this process's context."""

import os
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from celery.signals import worker_process_init

from api.context import ServiceContext
from api.events import link_pending_events
from api.settings import get_settings
from workers import jobs
from workers.app import app
from workers.names import EXPIRE_CHALLENGES, LINK_EVENTS, START_AUDIT, SWEEP_AUDITS, VERIFY_AUDIT

TaskFunction = TypeVar("TaskFunction", bound=Callable[..., Any])


def task(name: str) -> Callable[[TaskFunction], TaskFunction]:
    """Register a function as the Celery task `name`, keeping its type (celery ships no type hints).

    Tasks are only ever sent by name (`workers.names`), so the function itself stays a plain function."""

    def register(function: TaskFunction) -> TaskFunction:
        app.task(name=name)(function)
        return function

    return register


@cache
def worker_context() -> ServiceContext:
    """One context per worker process, built lazily so a forked child never shares its parent's pool."""
    return ServiceContext.from_settings(get_settings())


def limit_torch_threads(**_: object) -> None:
    # Several pool processes on one machine must not each claim every core for torch.
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def preload_models(**_: object) -> None:
    jobs.preload_models(worker_context())


worker_process_init.connect(limit_torch_threads, weak=False)
worker_process_init.connect(preload_models, weak=False)


@task(START_AUDIT)
def start_audit(audit_id: str) -> None:
    jobs.start_audit(worker_context(), audit_id)


@task(VERIFY_AUDIT)
def verify_audit(audit_id: str) -> None:
    jobs.verify_audit(worker_context(), audit_id)


@task(EXPIRE_CHALLENGES)
def expire_challenges() -> int:
    return jobs.expire_challenges(worker_context())


@task(SWEEP_AUDITS)
def sweep_audits() -> int:
    return jobs.sweep_audits(worker_context())


@task(LINK_EVENTS)
def link_events() -> int:
    """Link events that an API process committed but never linked into the chain (it crashed)."""
    return link_pending_events(worker_context().db)
