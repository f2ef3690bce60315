"""Secrets of the service: provider API keys, receipt tokens and the auditor's Ed25519 signatures.

- API key = `coin_<prefix>_<secret>`; the store keeps the prefix (to find the key) and SHA-256 of the
  secret, and compares in constant time. A leaked database does not leak usable keys.
- Receipt token = base64url(HMAC-SHA256(server secret, "receipt/" || report id)): the same receipt can
  be returned again on a retried submission without the token ever being stored in clear.
- Receipts and verdicts are signed with the auditor's Ed25519 key over their canonical JSON, so anyone
  holding the auditor's public key can check them offline.
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


class Signer:
    """The auditor's Ed25519 key (from COIN_SIGNING_KEY) and HMAC secret (COIN_SECRET_KEY)."""

    def __init__(self, signing_seed_hex: str, secret_key: str) -> None:
        self._signing_key = SigningKey(bytes.fromhex(signing_seed_hex))
        self._secret = secret_key.encode("utf-8")

    @cached_property
    def public_key_hex(self) -> str:
        return bytes(self._signing_key.verify_key).hex()

    def sign(self, statement: dict[str, Any]) -> str:
        return self._signing_key.sign(canonical_json(statement)).signature.hex()

    def receipt_token(self, report_id: uuid.UUID) -> str:
        mac = hmac.digest(self._secret, f"receipt/{report_id}".encode(), "sha256")
        return f"{RECEIPT_TOKEN_PREFIX}_{base64.urlsafe_b64encode(mac).decode('ascii').rstrip('=')}"


def verify_signature(public_key_hex: str, statement: dict[str, Any], signature_hex: str) -> bool:
    """Ed25519 check of `signature_hex` over canonical_json(statement); False on any malformed input."""
    try:
        VerifyKey(bytes.fromhex(public_key_hex)).verify(
            canonical_json(statement), bytes.fromhex(signature_hex)
        )
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True
