"""Wire encodings of DESIGN §3 ("Encodings"): lowercase hex for hashes, roots and salts; standard base64
for embeddings, fingerprints and token bytes; canonical JSON for signatures and log entries.

Each decoder checks its input strictly and raises `EncodingError` naming the field.
"""

import base64
import binascii
import json
import re
from typing import Any

import orjson

from auditor.protocol.errors import EncodingError

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
    """Sorted keys, no insignificant whitespace, UTF-8 unescaped (DESIGN §3, "Encodings").

    The reference is the standard library's encoder below. orjson writes the same bytes for plain
    strings, integers, booleans, nulls, lists and string-keyed dicts, ten times faster; anything else
    (floats, which it spells differently, tuples, subclasses) and whatever it refuses (integers beyond 64
    bits, lone surrogates) goes to the reference."""
    if _plain(obj):
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _plain(obj: Any) -> bool:
    kind = type(obj)
    if kind is dict:
        return all(type(key) is str and _plain(value) for key, value in obj.items())
    if kind is list:
        return all(_plain(item) for item in obj)
    return kind is str or kind is int or kind is bool or obj is None
