"""The one settings object of the service, shared by the API, the workers and the CLI.

Every value comes from the environment with the prefix `COIN_` (e.g. `COIN_DATABASE_URL`). The defaults
make a demo run with no server at all (SQLite file, tasks in-process); outside `COIN_ENV=development`
the service refuses to start while any secret still has its published default value.
"""

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Published defaults: good for a local demo, never for anything else (see `refuse_default_secrets`).
DEV_SECRET_KEY = "coin-dev-secret-key-do-not-use-in-production"
DEV_SIGNING_KEY = "c0" * 32
DEV_ADMIN_TOKEN = "coin-dev-admin-token"
DEVELOPMENT = "development"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COIN_", extra="ignore")

    env: str = Field(default=DEVELOPMENT, description="development | test | production")
    database_url: str = Field(
        default="sqlite:///var/coin.sqlite3", description="SQLAlchemy URL of the audit store"
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker (redis://...); unset runs tasks in-process after each commit"
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
    challenge_epsilon: float = Field(
        default=0.05, gt=0, lt=1, description="smallest forged fraction to detect"
    )
    challenge_delta: float = Field(
        default=0.01, gt=0, lt=1, description="allowed miss probability at epsilon"
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
        if self.env == DEVELOPMENT:
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
                f"COIN_ENV={self.env!r} refuses the published default secrets: set {', '.join(still_default)}"
            )
        if len(self.admin_token.get_secret_value()) < 16:
            raise ValueError("COIN_ADMIN_TOKEN must be at least 16 characters outside development")
        if self.verify_delay_seconds and self.env == "production":
            raise ValueError("COIN_VERIFY_DELAY_SECONDS is a test knob; it must be 0 in production")
        if self.challenge_seed is not None and self.env == "production":
            raise ValueError("COIN_CHALLENGE_SEED is a test knob: production draws come from a CSPRNG")
        return self

    @property
    def embedded(self) -> bool:
        """No broker: tasks run in the API process right after the transaction that asked for them."""
        return not self.broker_url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
