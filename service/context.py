"""Everything a request or a job needs: settings, database, the auditor's keys and the job dispatcher."""

from dataclasses import dataclass
from functools import cached_property

from pydantic import SecretStr

from service.database import Database, PoolLimits
from service.events import chain_session_info
from service.jobs import Dispatcher
from service.security import ChainKeys, ScheduleKey, Signer
from service.settings import Settings


def _value(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def database_of(settings: Settings, pool: PoolLimits | None = None) -> Database:
    """The audit store of `settings`, its sessions carrying the chain keys (every append seals the trail)."""
    keys = ChainKeys(settings.chain_key.get_secret_value(), _value(settings.chain_key_previous))
    return Database(settings.database_url, pool or PoolLimits(), session_info=chain_session_info(keys))


@dataclass
class ServiceContext:
    settings: Settings
    db: Database
    signer: Signer

    @classmethod
    def from_settings(cls, settings: Settings) -> "ServiceContext":
        return cls(
            settings=settings,
            db=database_of(settings),
            signer=Signer(
                settings.signing_key.get_secret_value(),
                settings.secret_key.get_secret_value(),
                _value(settings.secret_key_previous),
            ),
        )

    @cached_property
    def schedule_key(self) -> ScheduleKey:
        configured = _value(self.settings.schedule_key)
        if configured is not None:
            return ScheduleKey(configured)
        return ScheduleKey.derived(self.settings.secret_key.get_secret_value())

    @cached_property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self)

    def close(self) -> None:
        self.db.dispose()
