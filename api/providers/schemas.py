"""Request and response schemas of the providers resource: providers, their keys, sampling policies and
monitoring standing."""

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.schemas import StorableBody
from service.models import EscalationReason, MonitorAlarm, PolicyLevel, SamplingPolicy
from service.monitoring.service import Standing
from service.scheduling.service import (
    DEFAULT_CLEAN_AUDITS,
    DEFAULT_WARNING_E_VALUE,
    DOMAIN_PATTERN,
    ESCALATION_FACTOR,
    MAX_CLEAN_AUDITS,
    MAX_PER_DAY,
    MAX_WARNING_E_VALUE,
    PolicyTerms,
)
from service.settings import AUDIT_ROUNDS, MIN_CHALLENGE_DEADLINE_SECONDS
from service.text import display_name

HexKey = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="Ed25519 public key, lowercase hex")]


class ProviderCreate(StorableBody):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"name": "example-llm-inc", "public_key": "3d4017c3e8" + "0" * 54}]},
    )

    name: Annotated[str, AfterValidator(display_name)] = Field(
        min_length=1,
        max_length=200,
        description="display name, stored in NFC without surrounding spaces; no control, bidi-override or "
        "invisible characters; unique ignoring case and Unicode compatibility forms",
    )
    public_key: HexKey | None = Field(
        None, description="if set, every report of this provider must carry an Ed25519 signature by this key"
    )
    challenge_deadline_seconds: float | None = Field(
        None,
        ge=MIN_CHALLENGE_DEADLINE_SECONDS,
        le=30 * 86400,
        strict=False,
        description="time this provider has to answer a challenge (default: COIN_CHALLENGE_DEADLINE_SECONDS); "
        "every round of an audit must end inside the retention window, so at most "
        f"(COIN_RETENTION_DAYS days - COIN_SCHEDULE_SETTLE_SECONDS - COIN_SCHEDULE_INTERVAL_SECONDS) / {AUDIT_ROUNDS}",
    )


class ProviderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    public_key: str | None
    challenge_deadline_seconds: float | None
    created_at: datetime


class ProviderCreated(ProviderOut):
    api_key: str = Field(description="the provider's API key; shown once, stored only as a hash")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b5e6d1e-3f0c-4d8a-9a57-1c1f8b0e2a44",
                    "name": "example-llm-inc",
                    "public_key": None,
                    "challenge_deadline_seconds": None,
                    "created_at": "2025-01-01T00:00:00Z",
                    "api_key": "coin_9f2c4e1a7b3d5c60_Vx3…",
                }
            ]
        }
    )


class ApiKeyOut(BaseModel):
    """One of a provider's API keys: its public prefix and its dates, never its secret."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {"prefix": "9f2c4e1a7b3d5c60", "created_at": "2025-01-01T00:00:00Z", "revoked_at": None}
            ]
        },
    )

    prefix: str = Field(description="the key's public part: `coin_<prefix>_<secret>`")
    created_at: datetime
    revoked_at: datetime | None = Field(description="from then on the key authenticates nothing")


class ApiKeyIssued(ApiKeyOut):
    api_key: str = Field(description="the new key; shown once, stored only as a hash")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "prefix": "5c60a7b39f2c4e1a",
                    "created_at": "2025-02-01T00:00:00Z",
                    "revoked_at": None,
                    "api_key": "coin_5c60a7b39f2c4e1a_Qm4…",
                }
            ]
        }
    )


DomainName = Annotated[
    str,
    Field(
        pattern=DOMAIN_PATTERN.pattern,
        description="the provider's domain (e.g. math, medical): its monitor uses the latest calibration "
        "of this domain (`coin calibrate`), else the shipped composite null, from its next period; its "
        "audits use that calibration's copy rule (copied_spans), else the shipped one, from the next audit",
    ),
]


class PolicyIn(BaseModel):
    """A provider's sampling policy, replaced as a whole: a term left out takes its default."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"domain": "math", "share": 0.02, "min_per_day": 5}]},
    )

    domain: DomainName
    share: float = Field(ge=0, le=1, description="the share of the provider's reports drawn for audit")
    min_per_day: int = Field(ge=0, le=MAX_PER_DAY, description="audits drawn per UTC day at least")
    escalated_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description=f"the share while escalated (default: {ESCALATION_FACTOR} × share, at most 1)",
    )
    escalated_min_per_day: int | None = Field(
        None,
        ge=0,
        le=MAX_PER_DAY,
        description=f"the minimum per day while escalated (default: {ESCALATION_FACTOR} × min_per_day)",
    )
    clean_audits: int = Field(
        DEFAULT_CLEAN_AUDITS,
        ge=1,
        le=MAX_CLEAN_AUDITS,
        description="consecutive passing audits that return an escalated provider to base",
    )
    warning_e_value: float = Field(
        DEFAULT_WARNING_E_VALUE,
        gt=1,
        le=MAX_WARNING_E_VALUE,
        description="the monitor's e-value at or above which the policy escalates (the alarm is at 1/alpha)",
    )

    def terms(self) -> PolicyTerms:
        return PolicyTerms(**self.model_dump())


class PolicyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "provider_id": "0b5e6d1e-3f0c-4d8a-9a57-1c1f8b0e2a44",
                    "domain": "math",
                    "share": 0.02,
                    "min_per_day": 5,
                    "escalated_share": 0.08,
                    "escalated_min_per_day": 20,
                    "clean_audits": 5,
                    "warning_e_value": 10.0,
                    "level": "escalated",
                    "escalation_reason": "fail",
                    "escalated_at": "2026-12-14T09:30:00Z",
                    "clean_streak": 2,
                    "effective_share": 0.08,
                    "effective_min_per_day": 20,
                    "retention_days": 30,
                    "updated_at": "2026-12-14T09:30:00Z",
                }
            ]
        }
    )

    provider_id: uuid.UUID
    domain: str
    share: float
    min_per_day: int
    escalated_share: float
    escalated_min_per_day: int
    clean_audits: int
    warning_e_value: float
    level: PolicyLevel = Field(description="escalated: the escalated share and minimum, full exposure")
    escalation_reason: EscalationReason | None = Field(description="why the policy escalated (when it is)")
    escalated_at: datetime | None
    clean_streak: int = Field(description="passing audits since the escalation (towards clean_audits)")
    effective_share: float = Field(description="the share the draw uses now")
    effective_min_per_day: int = Field(description="the minimum per day the draw uses now")
    retention_days: int = Field(description="only reports received within this many days are drawn")
    updated_at: datetime

    @classmethod
    def of(cls, policy: SamplingPolicy, retention_days: int) -> "PolicyOut":
        return cls(
            provider_id=policy.provider_id,
            domain=policy.domain,
            share=policy.share,
            min_per_day=policy.min_per_day,
            escalated_share=policy.escalated_share,
            escalated_min_per_day=policy.escalated_min_per_day,
            clean_audits=policy.clean_audits,
            warning_e_value=policy.warning_e_value,
            level=policy.level,
            escalation_reason=policy.escalation_reason,
            escalated_at=policy.escalated_at,
            clean_streak=policy.clean_streak,
            effective_share=policy.effective_share,
            effective_min_per_day=policy.effective_min_per_day,
            retention_days=retention_days,
            updated_at=policy.updated_at,
        )


class StandingOut(BaseModel):
    """The provider's monitor this period (a UTC month): the evidence against the honest null, and what
    it bounds."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "provider_id": "0b5e6d1e-3f0c-4d8a-9a57-1c1f8b0e2a44",
                    "period": "2026-12",
                    "calibration": "shipped",
                    "audits": 40,
                    "proof_failures": 0,
                    "e_value": 3.1,
                    "max_e_value": 4.2,
                    "anytime_p_value": 0.238,
                    "alpha": 0.01,
                    "alarm": None,
                    "alarm_at": None,
                    "alarmed_at": None,
                    "confidence": 0.95,
                    "inflated_reports_lower": 0.0,
                    "token_share_interval": [0.0, 1.0],
                }
            ]
        }
    )

    provider_id: uuid.UUID
    period: str = Field(description="YYYY-MM (UTC): the monitor starts afresh every month")
    calibration: str = Field(description='the null it tests against: "shipped" or "<domain>@<version>"')
    audits: int = Field(description="verdicts counted this period")
    proof_failures: int
    e_value: float = Field(description="evidence against an honest provider now (1: none)")
    max_e_value: float = Field(description="the largest e-value this period")
    anytime_p_value: float = Field(description="1 / max_e_value: valid however often it is looked at")
    alpha: float = Field(description="the alarm is raised at e-value 1 / alpha")
    alarm: MonitorAlarm | None = Field(description="proof: an audit failed; statistical: e-value >= 1/alpha")
    alarm_at: int | None = Field(description="the audit of the period that raised the alarm")
    alarmed_at: datetime | None
    confidence: float
    inflated_reports_lower: float = Field(
        description="lower confidence bound (at `confidence`, anytime) on the share of inflated reports"
    )
    token_share_interval: tuple[float, float] = Field(
        description="interval on the inflated share of billed tokens; the upper end is 1, because "
        "inflation that looks honest cannot be ruled out"
    )

    @classmethod
    def of(cls, provider_id: uuid.UUID, standing: Standing) -> "StandingOut":
        return cls(provider_id=provider_id, anytime_p_value=standing.anytime_p_value, **asdict(standing))
