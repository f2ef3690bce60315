"""Response schemas of liveness and readiness."""

import enum

from pydantic import BaseModel


class Liveness(BaseModel):
    status: str = "ok"


class Readiness(enum.StrEnum):
    READY = "ready"
    UNAVAILABLE = "unavailable"


class BrokerKind(enum.StrEnum):
    EMBEDDED = "embedded"  # jobs run in the API process
    REDIS = "redis"


class ReadyOut(BaseModel):
    status: Readiness
    broker: BrokerKind | None = None
    problems: list[str] = []
