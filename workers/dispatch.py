"""How the service hands work to the workers, after the transaction that created the work commits.

With a broker (`COIN_BROKER_URL`), a task message goes to its Celery queue. Without one (the embedded
default), the job runs in this process, inline, once the request's transaction has committed — a demo
needs no server. Either way a lost hand-off costs nothing but time: the audit's state is in the
database and the sweeper re-enqueues it.
"""

import logging
from collections.abc import Callable
from functools import cached_property, partial
from typing import TYPE_CHECKING

from celery import Celery
from sqlalchemy.orm import Session

from api.database import after_commit
from api.settings import Settings
from workers.names import QUEUE_OF_TASK

if TYPE_CHECKING:
    from api.context import ServiceContext

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context: ServiceContext | None = None

    def bind(self, context: "ServiceContext") -> None:
        self._context = context

    @cached_property
    def celery(self) -> Celery:
        from workers.app import make_celery

        return make_celery(self.settings)

    def enqueue(self, session: Session, task_name: str, *args: str) -> None:
        """Send `task_name(*args)` once `session`'s unit of work has committed."""
        after_commit(session, partial(self.send_now, task_name, *args))

    def send_now(self, task_name: str, *args: str) -> None:
        try:
            if self.settings.embedded:
                self._run_inline(task_name, *args)
            else:
                self.celery.send_task(task_name, args=list(args), queue=QUEUE_OF_TASK[task_name])
        except Exception:
            # The commit stands; the sweeper re-enqueues whatever this hand-off failed to start.
            log.exception("could not hand off %s%s; the sweeper will retry", task_name, args)

    def _run_inline(self, task_name: str, *args: str) -> None:
        from workers import jobs

        if self._context is None:
            raise RuntimeError("Dispatcher.bind(context) was not called")
        job: Callable[..., object] = jobs.JOBS[task_name]
        job(self._context, *args)
