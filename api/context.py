"""Everything a request or a task needs: settings, database, the auditor's keys and the task dispatcher."""

from dataclasses import dataclass

from api.database import Database
from api.security import Signer
from api.settings import Settings
from workers.dispatch import Dispatcher


@dataclass
class ServiceContext:
    settings: Settings
    db: Database
    signer: Signer
    dispatcher: Dispatcher

    @classmethod
    def from_settings(cls, settings: Settings) -> "ServiceContext":
        context = cls(
            settings=settings,
            db=Database(settings.database_url),
            signer=Signer(settings.signing_key.get_secret_value(), settings.secret_key.get_secret_value()),
            dispatcher=Dispatcher(settings),
        )
        context.dispatcher.bind(context)
        return context

    def close(self) -> None:
        self.db.dispose()
