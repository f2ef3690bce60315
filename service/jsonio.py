"""JSON for the store and for large responses: orjson, with the standard library for what it refuses.

Unlike `auditor.protocol.encoding.canonical_json`, nothing here is hashed or signed, so only the value matters,
not the bytes (orjson writes 1e-05 as 0.00001)."""

import json
import uuid
from datetime import datetime
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """JSON of `value`; ids and timestamps (as orjson writes them) included."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits or non-string keys: JSON the standard library accepts.
        return json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_id_or_time
        ).encode("utf-8")


def _id_or_time(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps_text(value: Any) -> str:
    """For SQLAlchemy's JSON columns (`create_engine(json_serializer=...)`)."""
    return dumps(value).decode("utf-8")
