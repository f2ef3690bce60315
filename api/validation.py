"""Input checks shared by the request schemas: what JSON allows but the store or the protocol cannot hold."""

import math
from typing import Any

# Deeper JSON than this is not a report; refusing it early also keeps recursion bounded.
MAX_JSON_DEPTH = 32
# What is signed or hashed is RFC 8785 canonical JSON, whose numbers are IEEE doubles: larger integers
# would not survive it (I-JSON, RFC 7493 §2.2).
MAX_JSON_INTEGER = 2**53 - 1


def check_storable(value: Any, depth: int = 0) -> Any:
    """Reject NUL characters and lone surrogates (PostgreSQL text cannot hold them, UTF-8 cannot encode
    them), non-finite numbers and numbers beyond ±(2**53 − 1) (canonical JSON has no such integer, and a
    float that large is a whole number that PostgreSQL's JSONB gives back as one) and absurd nesting.
    Returns `value` unchanged."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
        if abs(value) > MAX_JSON_INTEGER:
            raise ValueError(f"numbers must lie within ±{MAX_JSON_INTEGER} (2**53 - 1)")
    elif isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_JSON_INTEGER:
            raise ValueError(f"integers must lie within ±{MAX_JSON_INTEGER} (2**53 - 1)")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(key, depth + 1)
            check_storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_storable(item, depth + 1)
    return value
