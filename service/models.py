"""The audit store: one SQLAlchemy model module shared by `api/` and `workers/` through the service core.

PostgreSQL is the source of truth of every audit: the queue only carries hints ("look at audit X"),
so a lost message or a killed worker delays an audit but never loses it (see `service/audits/workflow.py`).
Secrets are never stored in clear: API keys and receipt tokens are kept as SHA-256 hashes.
"""

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names, so that migrations can name what they create and drop.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every back end (SQLite stores no zone; we put UTC back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _one_of(column: str, values: type[enum.StrEnum]) -> CheckConstraint:
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_valid")


def _enum(values: type[enum.StrEnum]) -> Enum:
    """A VARCHAR(16) column read and written as `values` (the CHECK constraint is `_one_of`'s)."""
    return Enum(
        values,
        native_enum=False,
        create_constraint=False,
        length=16,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )


class AuditStatus(enum.StrEnum):
    PENDING = "pending"  # asked for; the challenge is not drawn yet
    CHALLENGED = "challenged"  # challenge open, waiting for the provider
    VERIFYING = "verifying"  # response stored, verification queued or running
    DONE = "done"  # verdict written


class PlanGenerator(enum.StrEnum):
    """What an audit's exposure plan is drawn with from its seed (`service.audits.workflow.plan_for`)."""

    MT19937 = "mt19937"  # audits started before revision 0009: Python's Mersenne Twister, no CSPRNG
    BLAKE3 = "blake3"  # BLAKE3's output keyed with the seed (`auditor.protocol.challenge.KeyedRandom`)


class AuditTrigger(enum.StrEnum):
    ADMIN = "admin"
    CUSTOMER = "customer"
    SCHEDULED = "scheduled"


class ChallengeStatus(enum.StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    EXPIRED = "expired"


class Outcome(enum.StrEnum):
    """The outcome of an audit, in its signed verdict (coin-verdict/2 and /3).

    - `pass`: every check holds.
    - `suspect`: statistical evidence (a calibrated check such as the verifier or near-duplicate blocks
      flagged the revealed text, with a known false-positive rate). It raises the provider's monitoring
      and sampling rate; it accuses nobody.
    - `fail`: proof of inflation: a check that cannot fire on honest text failed (an inclusion proof or
      count opening, block consistency, token re-embedding, a block rebuilt as one repeated token, a
      token outside the declared vocabulary), or the provider missed the challenge's deadline.
    - `inconclusive`: no decision: a check still wanted more revealed blocks when the audit's exposure
      plan was spent, or the auditor could not verify (e.g. its models changed since the report).
    """

    PASS = "pass"
    SUSPECT = "suspect"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Provider(Base):
    __tablename__ = "providers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)  # NFC, as registered
    # The name casefolded after NFKC: two names that differ only in case or compatibility forms (full-width
    # letters, ligatures) share it, so one provider cannot register a look-alike of another.
    name_key: Mapped[str] = mapped_column(String(200), unique=True)
    # Ed25519 verify key (hex) for report signatures; a provider that registers one must sign.
    public_key: Mapped[str | None] = mapped_column(String(64))
    # Time this provider has to answer a challenge, if its agreement differs from the service default.
    challenge_deadline_seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """A provider's API key `coin_<prefix>_<secret>`: looked up by prefix, secret kept as SHA-256."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    provider: Mapped[Provider] = relationship()


class Report(Base):
    """One billed request as the provider reported it, with the signed receipt the auditor returned."""

    __tablename__ = "reports"
    __table_args__ = (
        UniqueConstraint("provider_id", "request_id"),
        # The staff's lists: newest first, paged by (received_at, id); a request id looked up across providers.
        Index("ix_reports_received_at_id", "received_at", "id"),
        Index("ix_reports_request_id", "request_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id"), index=True)
    request_id: Mapped[str] = mapped_column(String(256))
    model: Mapped[str] = mapped_column(String(200))
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[dict[str, Any]] = mapped_column(JSONDocument)  # the report as received (normalised)
    digest: Mapped[str] = mapped_column(String(64))  # blake3(canonical_json(body)), hex
    receipt: Mapped[dict[str, Any]] = mapped_column(JSONDocument)  # signed receipt, without the token
    receipt_token_hash: Mapped[str] = mapped_column(String(64))
    # Which COIN_SECRET_KEY derived the receipt token (`Signer.key_id`), so that a replay after a rotation
    # re-derives the same token; NULL for reports stored before key ids (derived with the current key).
    receipt_key_id: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    provider: Mapped[Provider] = relationship()
    audits: Mapped[list["Audit"]] = relationship(back_populates="report", order_by="Audit.created_at")


class Audit(Base):
    __tablename__ = "audits"
    __table_args__ = (
        _one_of("status", AuditStatus),
        _one_of("trigger", AuditTrigger),
        _one_of("plan_generator", PlanGenerator),
        Index("ix_audits_status_updated_at", "status", "updated_at"),
        Index("ix_audits_created_at_id", "created_at", "id"),  # the staff's list, paged by (created_at, id)
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    report_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("reports.id"), index=True)
    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id"), index=True)
    status: Mapped[AuditStatus] = mapped_column(_enum(AuditStatus), default=AuditStatus.PENDING)
    trigger: Mapped[AuditTrigger] = mapped_column(_enum(AuditTrigger))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Last time a worker or the API moved this audit on; the sweeper re-enqueues audits left too long.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Renewed every few seconds by the worker verifying this audit: a lease that the sweeper respects
    # while it is fresh and takes over once it is stale (the worker died).
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enqueue_count: Mapped[int] = mapped_column(Integer, default=0)
    # The secret seed (hex) the exposure plan is derived from (`service.audits.workflow.exposure_plan`):
    # drawn when the audit starts, never shown to the provider; the plan itself is re-derived, not stored.
    exposure_seed: Mapped[str | None] = mapped_column(String(64))
    # Every audit that starts now draws with BLAKE3; the server default marks the audits that started
    # before it did, so that their later rounds still follow the plan their first round began.
    plan_generator: Mapped[PlanGenerator] = mapped_column(
        _enum(PlanGenerator), server_default=text(f"'{PlanGenerator.MT19937.value}'")
    )
    # The whole exposure plan in the first round, rather than a few blocks a round: the scheduled audits
    # of an escalated provider (`service.scheduling`). The budget is the same; a clean first round no
    # longer ends the audit early.
    # A server default, not a Python one: an insert that names no such column (written for an older
    # schema, as the migration tests' rows are) gets false.
    full_exposure: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Verifications of this audit that raised (`service.audits.workflow`); a server default for the same
    # reason as `full_exposure`'s.
    verification_errors: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    report: Mapped[Report] = relationship(back_populates="audits")
    challenges: Mapped[list["Challenge"]] = relationship(back_populates="audit", order_by="Challenge.round")
    verdict: Mapped["Verdict | None"] = relationship(back_populates="audit")


class Challenge(Base):
    __tablename__ = "challenges"
    __table_args__ = (
        UniqueConstraint("audit_id", "round"),
        _one_of("status", ChallengeStatus),
        Index("ix_challenges_status_deadline", "status", "deadline"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    audit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("audits.id"))
    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id"), index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    body: Mapped[dict[str, Any]] = mapped_column(
        JSONDocument
    )  # auditor.protocol.challenge.Challenge.to_json()
    status: Mapped[ChallengeStatus] = mapped_column(_enum(ChallengeStatus), default=ChallengeStatus.OPEN)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)

    audit: Mapped[Audit] = relationship(back_populates="challenges")
    response: Mapped["ChallengeResponse | None"] = relationship(back_populates="challenge")


class ChallengeResponse(Base):
    __tablename__ = "responses"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    challenge_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("challenges.id"), unique=True)
    body: Mapped[dict[str, Any]] = mapped_column(
        JSONDocument
    )  # auditor.protocol.commitment.Response.to_json()
    digest: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    challenge: Mapped[Challenge] = relationship(back_populates="response")


class Verdict(Base):
    """The signed outcome of an audit; at most one per audit (the unique key makes a retry harmless)."""

    __tablename__ = "verdicts"
    __table_args__ = (_one_of("outcome", Outcome),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    audit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("audits.id"), unique=True)
    outcome: Mapped[Outcome] = mapped_column(_enum(Outcome))
    statement: Mapped[dict[str, Any]] = mapped_column(JSONDocument)  # what the signature covers
    signature: Mapped[str] = mapped_column(String(128))  # Ed25519 over canonical_json(statement), hex
    signing_key: Mapped[str] = mapped_column(String(64))  # the auditor's verify key, hex
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    audit: Mapped[Audit] = relationship(back_populates="verdict")

    @property
    def stated_outcome(self) -> Outcome:
        """The outcome the signed statement says: what the API serves. The `outcome` column is a copy for
        filtering; the integrity check reports a row where the two differ."""
        return Outcome(self.statement["outcome"])


class AuditEvent(Base):
    """Append-only, hash-chained trail of every state change (see `service/events.py`).

    `hash` = BLAKE3(prev_hash || canonical JSON of the row); `prev_hash` is unique, so the chain cannot
    fork, and the migration adds triggers that refuse UPDATE and DELETE.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        # /metrics reads the last integrity check: found at once, without indexing every event's kind.
        Index(
            "ix_audit_events_integrity_checked",
            "seq",
            postgresql_where=text("kind = 'integrity.checked'"),
            sqlite_where=text("kind = 'integrity.checked'"),
        ),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(64))
    provider_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    report_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    audit_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class PendingEvent(Base):
    """An event committed with its cause but not yet linked into the chain (see `service/events.py`).

    Report intake writes these instead of taking the chain lock on every request; the chain writer moves
    them into `audit_events` in batches. Rows live here for milliseconds, not as a record."""

    __tablename__ = "pending_events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(64))
    provider_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    report_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    audit_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    # HMAC with the chain key over the row's content: the chain writer links only rows that carry it, so a
    # row inserted here by someone without the key is recorded as such, never vouched for.
    mac: Mapped[str] = mapped_column(String(64))


class ChainSeal(Base):
    """The head of the audit trail, MACed with COIN_CHAIN_KEY (which the database never holds).

    One row, rewritten by every append under the chain lock. An event inserted, removed or re-hashed by
    someone without the key leaves a head that no longer matches its seal: the next append records that
    in the trail (`chain.seal_mismatch`) and `coin verify-chain` reports it. A rollback to an older head
    and seal goes unnoticed: only a head anchored outside the database would show it."""

    __tablename__ = "chain_seal"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, default=1)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(16))
    mac: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StaffAccount(Base):
    """A member of the auditor's staff: signs in to the dashboard with a password (Argon2id hash)."""

    __tablename__ = "staff_accounts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalised: stripped, lower case
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2-cffi's encoded hash, parameters included
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StaffSession(Base):
    """A signed-in dashboard session. The cookie holds a random token; the store keeps its SHA-256, so
    a leaked database opens no session. Logout deletes the row, which a signed token could not undo."""

    __tablename__ = "staff_sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("staff_accounts.id", ondelete="CASCADE"), index=True
    )
    # The synchronizer token every dashboard form and htmx request must echo (useless without the cookie).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # absolute; idleness also ends it

    staff: Mapped[StaffAccount] = relationship()


class LoginFailure(Base):
    """A failed dashboard sign-in, counted per account and per client address over a window; kept in the
    store so that the limit holds across API processes. The account is kept as SHA-256 of the typed email:
    whatever was typed there (a password, by mistake) is not stored."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_account_occurred_at", "account", "occurred_at"),
        Index("ix_login_failures_address_occurred_at", "address", "occurred_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class PolicyLevel(enum.StrEnum):
    """Where a provider's sampling policy stands: `base` (its base share and minimum per day) or
    `escalated` (the escalated ones, each scheduled audit revealing its whole exposure plan at once)."""

    BASE = "base"
    ESCALATED = "escalated"


class EscalationReason(enum.StrEnum):
    """Why a sampling policy escalated: `fail` (an audit failed a proof check), `alarm` (the provider's
    monitor alarmed), `evidence` (the monitor's e-value reached the policy's warning level)."""

    FAIL = "fail"
    ALARM = "alarm"
    EVIDENCE = "evidence"


class SamplingPolicy(Base):
    """How many of a provider's reports the auditor draws for audit (`service.scheduling`), and the
    state of its escalation. One row per provider; a provider without one is not sampled on a schedule.
    Every change is an event in the audit trail."""

    __tablename__ = "sampling_policies"
    __table_args__ = (
        _one_of("level", PolicyLevel),
        _one_of("escalation_reason", EscalationReason),
        CheckConstraint(
            "share >= 0 AND share <= escalated_share AND escalated_share <= 1", name="shares_ordered"
        ),
        CheckConstraint("min_per_day >= 0 AND min_per_day <= escalated_min_per_day", name="minimums_ordered"),
        CheckConstraint("clean_audits >= 1 AND warning_e_value > 1", name="escalation_bounds"),
    )

    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id"), primary_key=True)
    # The provider's domain: its monitor uses the latest calibration of that domain (`coin calibrate`).
    domain: Mapped[str] = mapped_column(String(64))
    share: Mapped[float] = mapped_column(Float)
    min_per_day: Mapped[int] = mapped_column(Integer)
    escalated_share: Mapped[float] = mapped_column(Float)
    escalated_min_per_day: Mapped[int] = mapped_column(Integer)
    clean_audits: Mapped[int] = mapped_column(Integer)  # consecutive passing audits that end an escalation
    warning_e_value: Mapped[float] = mapped_column(Float)
    level: Mapped[PolicyLevel] = mapped_column(_enum(PolicyLevel), default=PolicyLevel.BASE)
    escalation_reason: Mapped[EscalationReason | None] = mapped_column(_enum(EscalationReason))
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    clean_streak: Mapped[int] = mapped_column(Integer, default=0)  # passing audits since the escalation
    # Reports received up to this instant have had their share draw (the next draw starts after it).
    drawn_through: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def escalated(self) -> bool:
        return self.level == PolicyLevel.ESCALATED

    @property
    def effective_share(self) -> float:
        return self.escalated_share if self.escalated else self.share

    @property
    def effective_min_per_day(self) -> int:
        return self.escalated_min_per_day if self.escalated else self.min_per_day


class DrawReason(enum.StrEnum):
    """Why the schedule drew a report: `share` (its keyed score fell under the share in force) or
    `minimum` (among the day's lowest scores, to reach the minimum per day)."""

    SHARE = "share"
    MINIMUM = "minimum"


class ScheduledDraw(Base):
    """A report the schedule drew for audit, with what justifies the draw: the period whose key scored
    it, the score (HMAC-SHA256, hex) and the share or rank it was drawn under. Unique per (provider,
    report), so a draw that runs twice opens one audit."""

    __tablename__ = "scheduled_draws"
    __table_args__ = (
        UniqueConstraint("provider_id", "report_id"),
        _one_of("reason", DrawReason),
        _one_of("level", PolicyLevel),
        Index("ix_scheduled_draws_provider_id_drawn_at", "provider_id", "drawn_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id"))
    report_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("reports.id"))
    audit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("audits.id"), index=True)
    reason: Mapped[DrawReason] = mapped_column(_enum(DrawReason))
    key_period: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD (UTC) of the key that scored it
    key_id: Mapped[str] = mapped_column(String(16))  # which schedule key (`service.scheduling.draws`)
    score: Mapped[str] = mapped_column(String(64))
    share: Mapped[float | None] = mapped_column(Float)  # share draws
    rank: Mapped[int | None] = mapped_column(Integer)  # minimum draws: 1 = the day's lowest score
    level: Mapped[PolicyLevel] = mapped_column(_enum(PolicyLevel))
    drawn_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MonitorAlarm(enum.StrEnum):
    """A provider monitor's alarm: `proof` (an audit failed a proof check) or `statistical` (the
    e-process reached 1/alpha: an honest provider gets there with probability at most alpha a period)."""

    PROOF = "proof"
    STATISTICAL = "statistical"


class ProviderMonitor(Base):
    """A provider's monitor over one period (`auditor.monitoring.MonitorState`, as JSON), updated in the
    transaction of every verdict; the columns beside it repeat its figures for ranking and display."""

    __tablename__ = "monitor_states"
    __table_args__ = (UniqueConstraint("provider_id", "period"), _one_of("alarm", MonitorAlarm))

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id"), index=True)
    period: Mapped[str] = mapped_column(String(16))
    calibration: Mapped[str] = mapped_column(String(80))  # "shipped" or "<domain>@<version>"
    state: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    audits: Mapped[int] = mapped_column(Integer, default=0)
    proof_failures: Mapped[int] = mapped_column(Integer, default=0)
    log_e: Mapped[float] = mapped_column(Float, default=0.0)
    max_log_e: Mapped[float] = mapped_column(Float, default=0.0)
    alarm: Mapped[MonitorAlarm | None] = mapped_column(_enum(MonitorAlarm))
    alarm_at: Mapped[int | None] = mapped_column(Integer)  # the audit of the period that raised it
    alarmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    inflated_reports_lower: Mapped[float] = mapped_column(Float, default=0.0)
    token_share_lower: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MonitorCalibration(Base):
    """The null bound of one domain's monitor and its copy rule, measured on honest reference traces the
    auditor produced itself (`coin calibrate`); versioned per domain, never changed."""

    __tablename__ = "monitor_calibrations"
    __table_args__ = (UniqueConstraint("domain", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    domain: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    traces: Mapped[int] = mapped_column(Integer)
    rates: Mapped[dict[str, Any]] = mapped_column(JSONDocument)  # the reference audits' `FoldRates`
    policy: Mapped[dict[str, Any]] = mapped_column(JSONDocument)  # `MonitorPolicy.to_json()`
    # The copied_spans thresholds the references set (`rule_for_references`): copied, repeated, min_tokens.
    copy_rule: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    heads: Mapped[str] = mapped_column(String(32))  # the head checkpoint the references were audited with
    embd_id: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def label(self) -> str:
        """What a verdict's `decided_by.calibration` names it by."""
        return f"{self.domain}@{self.version}"


class DeliveryStatus(enum.StrEnum):
    """A webhook delivery: `pending` (due at its next attempt), `delivered` (answered 2xx), `failed`
    (given up after the last attempt)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(Base):
    """One notification to the auditor's staff (a failed audit, a provider alarm) for one URL; unique
    per (event, URL), so an event that is recorded twice is sent once."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_key", "url"),
        _one_of("status", DeliveryStatus),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    event_key: Mapped[str] = mapped_column(String(160))  # e.g. audit.failed:<audit id>
    kind: Mapped[str] = mapped_column(String(32))
    provider_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("providers.id"))
    url: Mapped[str] = mapped_column(String(2000))
    body: Mapped[dict[str, Any]] = mapped_column(JSONDocument)  # sent as its RFC 8785 canonical JSON
    status: Mapped[DeliveryStatus] = mapped_column(_enum(DeliveryStatus), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookAttempt(Base):
    """Every attempt at a delivery: the answer's status code or the error, and when the next one is due."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_deliveries.id"))
    number: Mapped[int] = mapped_column(Integer)  # 1 for the first attempt
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    seconds: Mapped[float] = mapped_column(Float)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: delivered or given up
