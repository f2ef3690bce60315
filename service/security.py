"""Secrets of the service: provider API keys, receipt tokens and the auditor's Ed25519 signatures.

- API key = `coin_<prefix>_<secret>`; the store keeps the prefix (to find the key) and SHA-256 of the
  secret, and compares in constant time. A leaked database does not leak usable keys.
- Receipt token = base64url(HMAC-SHA256(server secret, "receipt/" || report id)): the same receipt can
  be returned again on a retried submission without the token ever being stored in clear. The report
  keeps the id of the secret that derived its token, so that a rotation (COIN_SECRET_KEY_PREVIOUS) does
  not change the token a replay returns; tokens are checked against their stored hash, whatever the key.
- Chain keys (COIN_CHAIN_KEY, and COIN_CHAIN_KEY_PREVIOUS during a rotation) MAC the head of the audit
  trail and the events waiting to be linked (`service/events.py`); the database never holds them.
- Receipts and verdicts are signed with the auditor's Ed25519 key over their canonical JSON, so anyone
  holding the auditor's public key can check them offline.
- The schedule key (COIN_SCHEDULE_KEY, else derived from COIN_SECRET_KEY) scores reports for the
  scheduled draws through a key per UTC day, which the auditor can disclose after the day to show that
  a draw was fair without disclosing any other day's (`ScheduleKey`).
- Webhooks carry HMAC-SHA256 with COIN_WEBHOOK_SECRET over their timestamp and body
  (`webhook_signature`).
"""

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from auditor.protocol.encoding import canonical_json

API_KEY_PREFIX = "coin"
RECEIPT_TOKEN_PREFIX = "rt"


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


@dataclass(frozen=True)
class NewApiKey:
    key: str  # shown to the provider once
    prefix: str
    secret_hash: str


def new_api_key() -> NewApiKey:
    prefix = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewApiKey(key=f"{API_KEY_PREFIX}_{prefix}_{secret}", prefix=prefix, secret_hash=sha256_hex(secret))


def split_api_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed API key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def key_id(key: str) -> str:
    """A public name for a secret key (16 hex of a domain-separated SHA-256): which key made a token or a
    MAC can be stored beside it without revealing anything about the key."""
    return sha256_hex(f"coin-key-id/{key}")[:16]


def _keyring(current: str, previous: str | None) -> dict[str, bytes]:
    """The configured keys by id, the current one first."""
    keys = [current] if previous is None else [current, previous]
    return {key_id(key): key.encode("utf-8") for key in keys}


class Signer:
    """The auditor's Ed25519 key (from COIN_SIGNING_KEY) and HMAC secret (COIN_SECRET_KEY, and the one
    before it during a rotation)."""

    def __init__(
        self, signing_seed_hex: str, secret_key: str, previous_secret_key: str | None = None
    ) -> None:
        self._signing_key = SigningKey(bytes.fromhex(signing_seed_hex))
        self._secrets = _keyring(secret_key, previous_secret_key)
        self.secret_key_id = key_id(secret_key)

    @cached_property
    def public_key_hex(self) -> str:
        return bytes(self._signing_key.verify_key).hex()

    def sign(self, statement: dict[str, Any]) -> str:
        return self._signing_key.sign(canonical_json(statement)).signature.hex()

    def receipt_token(self, report_id: uuid.UUID) -> str:
        """The token of a new report, derived with the current secret (`secret_key_id`)."""
        return self._derive(self._secrets[self.secret_key_id], report_id)

    def rederived_receipt_token(self, report_id: uuid.UUID, secret_key_id: str | None) -> str | None:
        """The token of a stored report, derived again with the secret that derived it (None: the current
        one, for reports stored before key ids); None once that secret is no longer configured."""
        secret = self._secrets.get(secret_key_id or self.secret_key_id)
        return None if secret is None else self._derive(secret, report_id)

    @staticmethod
    def _derive(secret: bytes, report_id: uuid.UUID) -> str:
        mac = hmac.digest(secret, f"receipt/{report_id}".encode(), "sha256")
        return f"{RECEIPT_TOKEN_PREFIX}_{base64.urlsafe_b64encode(mac).decode('ascii').rstrip('=')}"


class ChainKeys:
    """HMAC-SHA256 with the chain key: `mac` with the current key, `verify` with any configured one."""

    def __init__(self, current: str, previous: str | None = None) -> None:
        self._keys = _keyring(current, previous)
        self.current_id = key_id(current)

    def mac(self, message: bytes) -> str:
        return hmac.digest(self._keys[self.current_id], message, "sha256").hex()

    def knows(self, mac_key_id: str) -> bool:
        return mac_key_id in self._keys

    def verify(self, message: bytes, mac: str, mac_key_id: str | None = None) -> bool:
        """Whether `mac` is the MAC of `message` under the key `mac_key_id` (any configured key if None)."""
        if mac_key_id is None:
            candidates = list(self._keys.values())
        else:
            candidates = [self._keys[mac_key_id]] if mac_key_id in self._keys else []
        return any(hmac.compare_digest(hmac.digest(key, message, "sha256").hex(), mac) for key in candidates)


def verify_signature(public_key_hex: str, statement: dict[str, Any], signature_hex: str) -> bool:
    """Ed25519 check of `signature_hex` over canonical_json(statement); False on any malformed input."""
    try:
        VerifyKey(bytes.fromhex(public_key_hex)).verify(
            canonical_json(statement), bytes.fromhex(signature_hex)
        )
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


SCHEDULE_VERSION = "coin-schedule/1"


class ScheduleKey:
    """Scores for the scheduled draws: score(day, report) = HMAC-SHA256(K_day, report id), with the day's
    key K_day = HMAC-SHA256(key, "coin-schedule/1:" ‖ day). A provider cannot predict which reports
    will be drawn; after the day the auditor may publish K_day, from which anyone recomputes that day's
    scores and no other day's."""

    def __init__(self, key: str) -> None:
        self._key = key.encode("utf-8")
        self.key_id = key_id(key)

    @classmethod
    def derived(cls, secret_key: str) -> "ScheduleKey":
        """The schedule key derived from the auditor's HMAC secret (COIN_SECRET_KEY), when no
        COIN_SCHEDULE_KEY is configured."""
        return cls(hmac.digest(secret_key.encode("utf-8"), b"coin-schedule-key/1", "sha256").hex())

    def day_key(self, day: str) -> bytes:
        return hmac.digest(self._key, f"{SCHEDULE_VERSION}:{day}".encode("ascii"), "sha256")

    def score(self, day: str, report_id: uuid.UUID) -> str:
        """The report's score under the day's key, hex (64 digits): a uniform draw in [0, 2^256)."""
        return hmac.digest(self.day_key(day), str(report_id).encode("ascii"), "sha256").hex()

    def pool_start(self, day: str) -> uuid.UUID:
        """Where the day's minimum draws start reading report ids (in id order, wrapping round): a
        point no provider can predict, in ids it does not choose."""
        return uuid.UUID(bytes=hmac.digest(self.day_key(day), b"minimum-pool", "sha256")[:16])


def score_below(score: str, share: float) -> bool:
    """Whether a score (hex) read as a fraction of 2^256 is below `share`."""
    return int(score, 16) < share * 2**256


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=` + HMAC-SHA256(secret, timestamp ‖ "." ‖ body), hex: the timestamp is covered, so a
    receiver that refuses old timestamps refuses a replayed delivery."""
    message = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.digest(secret.encode("utf-8"), message, "sha256").hex()
