"""The one settings object of the service, shared by the API, the workers and the CLI.

Every value comes from the environment with the prefix `COIN_` (e.g. `COIN_DATABASE_URL`). The defaults
make a demo run with no server at all (SQLite file, tasks in-process); outside `COIN_ENV=development`
the service refuses to start while any secret still has its published default value.
"""

import enum
from functools import lru_cache

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Published defaults: good for a local demo, never for anything else (see `refuse_default_secrets`).
DEV_SECRET_KEY = "coin-dev-secret-key-do-not-use-in-production"
DEV_SIGNING_KEY = "c0" * 32
DEV_ADMIN_TOKEN = "coin-dev-admin-token"


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"  # the published default secrets and the test knobs are allowed
    TEST = "test"  # real secrets; the test knobs (fixed challenge seed, verification delay) allowed
    PRODUCTION = "production"


class SettingsError(ValueError):
    """The environment does not make a valid configuration; the message names the variables (never their
    values, which may be secrets)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COIN_", extra="ignore")

    env: Environment = Field(default=Environment.DEVELOPMENT, description="development | test | production")
    database_url: str = Field(
        default="sqlite:///var/coin.sqlite3", description="SQLAlchemy URL of the audit store"
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker (redis://...); unset runs tasks in-process after each commit"
    )
    broker_key_prefix: str = Field(
        default="",
        max_length=64,
        description="prefix of every Redis key of the broker, so that several deployments (or test runs) "
        "can share one Redis",
    )
    secret_key: SecretStr = Field(
        default=SecretStr(DEV_SECRET_KEY), description="HMAC key that derives receipt tokens from report ids"
    )
    signing_key: SecretStr = Field(
        default=SecretStr(DEV_SIGNING_KEY),
        description="Ed25519 seed (64 hex) that signs receipts and verdicts",
    )
    admin_token: SecretStr = Field(
        default=SecretStr(DEV_ADMIN_TOKEN), description="bearer token of the auditor admin"
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0, description="larger request bodies get 413")

    challenge_deadline_seconds: float = Field(
        default=3600.0, gt=0, description="time a provider has to answer"
    )
    customer_audit_quota: int = Field(
        default=3, ge=0, description="audits a receipt holder may request per report"
    )

    sweep_interval_seconds: float = Field(
        default=60.0, gt=0, description="beat period of the stuck-audit sweeper"
    )
    expire_interval_seconds: float = Field(
        default=30.0, gt=0, description="beat period of the deadline check"
    )
    stale_after_seconds: float = Field(
        default=300.0, gt=0, description="an audit untouched this long in a working state is re-enqueued"
    )
    task_soft_time_limit_seconds: float = Field(default=540.0, gt=0)
    task_time_limit_seconds: float = Field(default=600.0, gt=0)
    broker_visibility_timeout_seconds: float = Field(
        default=3600.0, gt=0, description="an unacknowledged task message is redelivered after this long"
    )
    embed_device: str | None = Field(
        default=None, description="torch device for verification (default: auto)"
    )
    verify_delay_seconds: float = Field(
        default=0.0, ge=0, description="fault injection for tests: sleep inside verification; 0 outside tests"
    )
    challenge_seed: str | None = Field(
        default=None, description="test knob: seed challenge draws for reproducible tests; unset = CSPRNG"
    )

    @field_validator("env", mode="before")
    @classmethod
    def env_is_known(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("signing_key")
    @classmethod
    def signing_key_is_a_seed(cls, value: SecretStr) -> SecretStr:
        seed = value.get_secret_value()
        try:
            ok = len(bytes.fromhex(seed)) == 32
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("COIN_SIGNING_KEY must be an Ed25519 seed: 64 hex characters")
        return value

    @model_validator(mode="after")
    def refuse_default_secrets(self) -> "Settings":
        if self.is_development:
            return self
        defaults = {
            "COIN_SECRET_KEY": (self.secret_key, DEV_SECRET_KEY),
            "COIN_SIGNING_KEY": (self.signing_key, DEV_SIGNING_KEY),
            "COIN_ADMIN_TOKEN": (self.admin_token, DEV_ADMIN_TOKEN),
        }
        still_default = [
            name for name, (value, default) in defaults.items() if value.get_secret_value() == default
        ]
        if still_default:
            raise ValueError(
                f"COIN_ENV={self.env.value} refuses the published default secrets: set {', '.join(still_default)}"
            )
        if len(self.admin_token.get_secret_value()) < 16:
            raise ValueError("COIN_ADMIN_TOKEN must be at least 16 characters outside development")
        if len(self.secret_key.get_secret_value()) < 32:
            raise ValueError("COIN_SECRET_KEY must be at least 32 characters outside development")
        if self.verify_delay_seconds and self.env == Environment.PRODUCTION:
            raise ValueError("COIN_VERIFY_DELAY_SECONDS is a test knob; it must be 0 in production")
        if self.challenge_seed is not None and self.env == Environment.PRODUCTION:
            raise ValueError("COIN_CHALLENGE_SEED is a test knob: production draws come from a CSPRNG")
        return self

    @property
    def is_development(self) -> bool:
        return self.env == Environment.DEVELOPMENT

    @property
    def embedded(self) -> bool:
        """No broker: tasks run in the API process right after the transaction that asked for them."""
        return not self.broker_url


def load_settings() -> Settings:
    """Settings from the environment; SettingsError in one line naming what is wrong, never echoing
    a value (pydantic's own message would print the rejected input, which may be a secret)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            names = "_".join(str(part) for part in error["loc"]).upper()
            problems.append(f"COIN_{names}: {message}" if names else message)
        raise SettingsError("; ".join(problems)) from None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return load_settings()
