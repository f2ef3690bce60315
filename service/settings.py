"""The one settings object of the service, shared by the API, the workers and the CLI.

Every value comes from the environment with the prefix `COIN_` (e.g. `COIN_DATABASE_URL`). The defaults
make a demo run with no server at all (SQLite file, tasks in-process); outside `COIN_ENV=development`
the service refuses to start while any secret still has its published default value.
"""

import enum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from auditor.semantic.exposure import ExposurePolicy

# Published defaults: good for a local demo, never for anything else (see `refuse_default_secrets`).
DEV_SECRET_KEY = "coin-dev-secret-key-do-not-use-in-production"
DEV_SIGNING_KEY = "c0" * 32
DEV_ADMIN_TOKEN = "coin-dev-admin-token"
DEV_CHAIN_KEY = "coin-dev-chain-key-do-not-use-in-production"
# A challenge shorter than this cannot be answered by a provider that polls for challenges every few
# seconds and has to fetch openings from its own store: it would only fail honest providers.
MIN_CHALLENGE_DEADLINE_SECONDS = 60.0
# The back ends the store runs on, as SQLAlchemy names them: `service.database` talks to psycopg 3
# directly on PostgreSQL (streamed inserts), so no other driver works there.
# Rounds of an audit at most; each round's challenge gets a fresh deadline.
AUDIT_ROUNDS = ExposurePolicy().rounds
SUPPORTED_DATABASES = {"sqlite": "pysqlite", "postgresql": "psycopg"}
# The service's own folder of runtime files, relative to the working directory (the default SQLite
# store, the demo's): created when missing. Any other folder of a SQLite file must exist, so that a
# typo in COIN_DATABASE_URL is refused rather than creating a tree of folders.
SERVICE_FOLDER = Path("var")


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"  # the published default secrets and the test knobs are allowed
    TEST = "test"  # real secrets; the test knobs (fixed challenge seed, verification delay) allowed
    PRODUCTION = "production"


class SettingsError(ValueError):
    """The environment does not make a valid configuration; the message names the variables (never their
    values, which may be secrets)."""


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error never carries the rejected value, which may be a secret.
    model_config = SettingsConfigDict(env_prefix="COIN_", extra="ignore", hide_input_in_errors=True)

    env: Environment = Field(default=Environment.DEVELOPMENT, description="development | test | production")
    database_url: str = Field(
        default=f"sqlite:///{SERVICE_FOLDER / 'coin.sqlite3'}",
        description="SQLAlchemy URL of the audit store: sqlite:///PATH or postgresql+psycopg://...",
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
    secret_key_previous: SecretStr | None = Field(
        default=None,
        description="the COIN_SECRET_KEY before a rotation: replays of reports stored under it still return "
        "their receipt tokens (README, Operations)",
    )
    chain_key: SecretStr = Field(
        default=SecretStr(DEV_CHAIN_KEY),
        description="HMAC key that seals the head of the audit trail and the events waiting to be linked; "
        "the database never holds it, so rows written without it are detected",
    )
    chain_key_previous: SecretStr | None = Field(
        default=None, description="the COIN_CHAIN_KEY before a rotation: seals made with it still verify"
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="bearer token that may read /metrics (the admin token may too)"
    )
    signing_key: SecretStr = Field(
        default=SecretStr(DEV_SIGNING_KEY),
        description="Ed25519 seed (64 hex) that signs receipts and verdicts",
    )
    admin_token: SecretStr = Field(
        default=SecretStr(DEV_ADMIN_TOKEN), description="bearer token of the auditor admin"
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0, description="larger request bodies get 413")
    max_response_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="larger responses to a challenge get 413; a report whose honest response could be "
        "larger is refused at intake, since its audit could never be answered",
    )

    challenge_deadline_seconds: float = Field(
        default=3600.0, ge=MIN_CHALLENGE_DEADLINE_SECONDS, description="time a provider has to answer"
    )
    customer_audit_quota: int = Field(
        default=3, ge=0, description="new audits a receipt holder may request per report"
    )
    customer_audit_reuse_seconds: float = Field(
        default=86400.0,
        ge=0,
        description="a receipt holder asking within this long after a verdict of its report gets that audit, "
        "and spends no quota",
    )

    rate_limit_key_per_second: float = Field(
        default=500.0, gt=0, description="requests per second one credential may send (sustained)"
    )
    rate_limit_address_per_second: float = Field(
        default=1000.0, gt=0, description="requests per second one client address may send (sustained)"
    )
    rate_limit_burst_seconds: float = Field(
        default=2.0, gt=0, description="a burst may use this many seconds' worth of a rate at once"
    )
    auth_failures_per_minute: float = Field(
        default=30.0, gt=0, description="failed authentications per minute one client address may make"
    )
    max_requests_in_flight_per_address: int = Field(
        default=128,
        ge=1,
        description="requests one client address may have open at once, per API process (at 200/s, a "
        "client waiting 640 ms on every answer)",
    )
    body_read_timeout_seconds: float = Field(
        default=10.0, gt=0, description="a request whose body has not arrived in full by then gets 408"
    )

    staff_session_seconds: float = Field(
        default=8 * 3600.0, gt=0, description="a dashboard session ends this long after sign-in"
    )
    staff_idle_seconds: float = Field(
        default=3600.0, gt=0, description="a dashboard session ends after this long without a request"
    )
    login_window_seconds: float = Field(
        default=900.0, gt=0, description="failed dashboard sign-ins are counted over this window"
    )
    login_failures_per_account: int = Field(
        default=5, ge=1, description="failed sign-ins to one account in the window before it is refused"
    )
    login_failures_per_address: int = Field(
        default=20,
        ge=1,
        description="failed sign-ins from one client address in the window (an office "
        "shares one address, so this is above the per-account limit)",
    )

    sweep_interval_seconds: float = Field(
        default=5.0, gt=0, description="beat period of the stuck-audit sweeper"
    )
    expire_interval_seconds: float = Field(
        default=30.0, gt=0, description="beat period of the deadline check"
    )
    stale_after_seconds: float = Field(
        default=15.0,
        gt=0,
        description="an audit in a working state with no heartbeat for this long is re-enqueued",
    )
    heartbeat_interval_seconds: float = Field(
        default=5.0, gt=0, description="a worker verifying an audit renews its heartbeat this often"
    )
    integrity_check_interval_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="beat period of the integrity check (the audit trail and every row it vouches for)",
    )
    retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="days a provider must keep a report's openings, stated in its receipt; scheduled audits "
        "draw only reports inside this window",
    )
    schedule_key: SecretStr | None = Field(
        default=None,
        description="HMAC key of the scheduled draws (which reports are audited); unset: derived from "
        "COIN_SECRET_KEY",
    )
    schedule_interval_seconds: float = Field(
        default=300.0, gt=0, description="beat period of the scheduled draw"
    )
    schedule_settle_seconds: float = Field(
        default=60.0,
        ge=0,
        description="a report's share draw waits this long after its receipt: longer than any intake "
        "transaction, so that no report commits behind the draw's progress",
    )
    webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        max_length=2000,
        description="where the auditor's staff are notified of failed audits and provider alarms; unset: "
        "no notifications",
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key signing every webhook (required with COIN_WEBHOOK_URL)"
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, description="attempts at a webhook delivery before it is given up"
    )
    webhook_backoff_seconds: float = Field(
        default=30.0, gt=0, description="wait after a webhook's first failed attempt, doubled after each"
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="a webhook receiver must answer within this long"
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

    @field_validator("database_url")
    @classmethod
    def database_is_supported(cls, value: str) -> str:
        # The messages never quote the URL: it may hold a password.
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(
                "not a database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/NAME"
            ) from None
        backend = url.get_backend_name()
        # The driver is read only for a known back end: for another, SQLAlchemy would try to load it.
        if backend not in SUPPORTED_DATABASES or url.get_driver_name() != SUPPORTED_DATABASES[backend]:
            raise ValueError(
                f"the store runs on sqlite:/// or postgresql+psycopg://, not {url.drivername}://"
            )
        if backend == "sqlite" and url.database and url.database != ":memory:":
            folder = Path(url.database).parent
            if folder != SERVICE_FOLDER and not folder.is_dir():
                raise ValueError(f"the folder of the SQLite file does not exist: {folder}")
        return value

    @field_validator("signing_key")
    @classmethod
    def signing_key_is_a_seed(cls, value: SecretStr) -> SecretStr:
        try:
            seed = bytes.fromhex(value.get_secret_value())
        except ValueError:
            seed = b""
        if len(seed) != 32:
            raise ValueError("COIN_SIGNING_KEY must be an Ed25519 seed: 64 hex characters")
        # One spelling per seed (fromhex also reads upper case and spaces), so that the published default
        # is recognised however it is written.
        return SecretStr(seed.hex())

    @model_validator(mode="after")
    def heartbeats_outpace_staleness(self) -> "Settings":
        # Two heartbeats may be missed (a slow database commit) before a live verification looks dead.
        if self.stale_after_seconds < 2 * self.heartbeat_interval_seconds:
            raise ValueError(
                "COIN_STALE_AFTER_SECONDS must be at least twice COIN_HEARTBEAT_INTERVAL_SECONDS, or a "
                "verification still running would be started again"
            )
        return self

    @property
    def longest_challenge_deadline_seconds(self) -> float:
        """The longest challenge deadline under which a report can still be drawn: the first draw that
        sees a report runs up to `schedule_settle_seconds` + `schedule_interval_seconds` after its
        receipt, and every round of its audit (a fresh deadline each) must end before the receipt lets the
        provider delete its openings (`service.scheduling.draws.earliest_drawable`)."""
        drawable = self.retention_days * 86400 - self.schedule_settle_seconds - self.schedule_interval_seconds
        return drawable / AUDIT_ROUNDS

    @model_validator(mode="after")
    def audits_fit_the_retention_window(self) -> "Settings":
        if self.longest_challenge_deadline_seconds < MIN_CHALLENGE_DEADLINE_SECONDS:
            raise ValueError(
                f"COIN_RETENTION_DAYS={self.retention_days} leaves no room for {AUDIT_ROUNDS} rounds of "
                f"{MIN_CHALLENGE_DEADLINE_SECONDS:.0f} s after COIN_SCHEDULE_SETTLE_SECONDS and "
                "COIN_SCHEDULE_INTERVAL_SECONDS: no report could ever be drawn"
            )
        if self.challenge_deadline_seconds > self.longest_challenge_deadline_seconds:
            raise ValueError(
                f"COIN_CHALLENGE_DEADLINE_SECONDS: at most {self.longest_challenge_deadline_seconds:.0f} with "
                f"COIN_RETENTION_DAYS={self.retention_days}: the {AUDIT_ROUNDS} rounds of a scheduled audit "
                "must end before a provider may delete the report's openings, or no report is ever drawn"
            )
        return self

    @model_validator(mode="after")
    def responses_may_be_larger(self) -> "Settings":
        if self.max_response_bytes < self.max_body_bytes:
            raise ValueError("COIN_MAX_RESPONSE_BYTES must be at least COIN_MAX_BODY_BYTES")
        return self

    @model_validator(mode="after")
    def webhooks_are_signed(self) -> "Settings":
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ValueError("COIN_WEBHOOK_URL needs COIN_WEBHOOK_SECRET: every webhook is signed")
        return self

    @model_validator(mode="after")
    def refuse_default_secrets(self) -> "Settings":
        if self.is_development:
            return self
        # A previous key still verifies what it signed (receipt tokens, the trail's seals), so the
        # published ones are refused there too; padding one with spaces does not make it secret.
        defaults = {
            "COIN_SECRET_KEY": (self.secret_key, DEV_SECRET_KEY),
            "COIN_SECRET_KEY_PREVIOUS": (self.secret_key_previous, DEV_SECRET_KEY),
            "COIN_SIGNING_KEY": (self.signing_key, DEV_SIGNING_KEY),
            "COIN_ADMIN_TOKEN": (self.admin_token, DEV_ADMIN_TOKEN),
            "COIN_CHAIN_KEY": (self.chain_key, DEV_CHAIN_KEY),
            "COIN_CHAIN_KEY_PREVIOUS": (self.chain_key_previous, DEV_CHAIN_KEY),
        }
        still_default = [
            name
            for name, (value, default) in defaults.items()
            if value is not None and value.get_secret_value().strip() == default
        ]
        if still_default:
            raise ValueError(
                f"COIN_ENV={self.env.value} refuses the published default secrets: set {', '.join(still_default)}"
            )
        if len(self.admin_token.get_secret_value()) < 16:
            raise ValueError("COIN_ADMIN_TOKEN must be at least 16 characters outside development")
        for name, key in (
            ("COIN_SECRET_KEY", self.secret_key),
            ("COIN_SECRET_KEY_PREVIOUS", self.secret_key_previous),
            ("COIN_CHAIN_KEY", self.chain_key),
            ("COIN_CHAIN_KEY_PREVIOUS", self.chain_key_previous),
            ("COIN_SCHEDULE_KEY", self.schedule_key),
            ("COIN_WEBHOOK_SECRET", self.webhook_secret),
        ):
            if key is not None and len(key.get_secret_value()) < 32:
                raise ValueError(f"{name} must be at least 32 characters outside development")
        if self.metrics_token is not None and len(self.metrics_token.get_secret_value()) < 16:
            raise ValueError("COIN_METRICS_TOKEN must be at least 16 characters outside development")
        # Every environment but development and test is production: the test knobs are refused there.
        if self.env != Environment.TEST:
            if self.verify_delay_seconds:
                raise ValueError("COIN_VERIFY_DELAY_SECONDS is a test knob; it must be 0 in production")
            if self.challenge_seed is not None:
                raise ValueError("COIN_CHALLENGE_SEED is a test knob: production draws come from a CSPRNG")
        return self

    @property
    def is_development(self) -> bool:
        return self.env == Environment.DEVELOPMENT

    @property
    def secure_cookies(self) -> bool:
        """Cookies only over HTTPS, except in development (a laptop serves plain http on loopback)."""
        return not self.is_development

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
