"""Wire encodings of DESIGN §3 ("Encodings"): lowercase hex for hashes, roots and salts; standard base64
for embeddings, fingerprints and token bytes; canonical JSON for signatures and log entries.

Each decoder checks its input strictly and raises `EncodingError` naming the field.
"""

import base64
import binascii
import json
import re
from typing import Any

from auditor.errors import EncodingError

_HEX = re.compile(r"[0-9a-f]*")


def to_hex(data: bytes) -> str:
    return data.hex()


def from_hex(value: object, *, field: str, length: int | None = None) -> bytes:
    """Decode lowercase hex; `length` is the required number of bytes, if any."""
    if not isinstance(value, str):
        raise EncodingError(f"{field}: expected a hex string, got {type(value).__name__}")
    if len(value) % 2 or not _HEX.fullmatch(value):
        raise EncodingError(f"{field}: not lowercase hex of whole bytes")
    data = bytes.fromhex(value)
    if length is not None and len(data) != length:
        raise EncodingError(f"{field}: expected {length} bytes, got {len(data)}")
    return data


def to_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def from_b64(value: object, *, field: str, length: int | None = None) -> bytes:
    """Decode standard base64 (with padding, no whitespace); `length` is the required byte count."""
    if not isinstance(value, str):
        raise EncodingError(f"{field}: expected a base64 string, got {type(value).__name__}")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise EncodingError(f"{field}: not standard base64 ({exc})") from None
    if length is not None and len(data) != length:
        raise EncodingError(f"{field}: expected {length} bytes, got {len(data)}")
    return data


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8 unescaped (DESIGN §3, "Encodings")."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )
