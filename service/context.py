"""Everything a request or a job needs: settings, database, the auditor's keys and the job dispatcher."""

from dataclasses import dataclass
from functools import cached_property

from service.database import Database
from service.jobs import Dispatcher
from service.security import Signer
from service.settings import Settings


@dataclass
class ServiceContext:
    settings: Settings
    db: Database
    signer: Signer

    @classmethod
    def from_settings(cls, settings: Settings) -> "ServiceContext":
        return cls(
            settings=settings,
            db=Database(settings.database_url),
            signer=Signer(settings.signing_key.get_secret_value(), settings.secret_key.get_secret_value()),
        )

    @cached_property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self)

    def close(self) -> None:
        self.db.dispose()
