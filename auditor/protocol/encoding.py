r"""Wire encodings of DESIGN §3 ("Encodings"): lowercase hex for hashes, roots and salts; standard base64
for embeddings, fingerprints and token bytes; canonical JSON for signatures and log entries.

Each decoder checks its input strictly and raises `EncodingError` naming the field; `object_of` and
`field_of` read JSON objects for every message of the protocol, with a `ProtocolError` naming the field.

Canonical JSON is RFC 8785, the JSON Canonicalization Scheme (JCS): no insignificant whitespace, UTF-8
with only the mandatory escapes, numbers as ECMAScript writes them (`0.0` is `0`, `1e-7` is `1e-7`,
`1e21` is `1e+21`), object keys sorted by their UTF-16 code units. A signature over it can therefore be
checked outside Python, by any JCS implementation (tests/unit/verify_signature.mjs is one in a few lines
of JavaScript around `JSON.stringify`). The reference is the `rfc8785` package. It is pure Python and
slow, and canonical JSON is on the hot path of report intake, so `canonical_json` gives orjson the
values whose orjson bytes provably are the JCS bytes; `_fast` checks that they contain

- only the exact types dict, list, str, int, bool and None. Floats go to the reference because orjson
  spells some differently (`0.0`, `-0.0`, `1e+16`, `123456789.0`); so do subclasses (StrEnum,
  IntEnum, ...), tuples, UUIDs and datetimes, which orjson writes in its own way: the reference writes
  tuples as lists, str and int subclasses as their values, and refuses the rest;
- only dict keys that are exact str without characters ≥ U+E000. orjson sorts keys by code point, JCS
  by UTF-16 code units; the two orders differ only where a character in U+E000–U+FFFF meets one beyond
  U+FFFF (a surrogate pair, U+D800–U+DFFF in UTF-16) at the first difference of two keys.

Integers need no check of their own: with `OPT_STRICT_INTEGER`, orjson refuses exactly the integers
outside ±(2**53 − 1), the JCS (I-JSON) range, and a refusal goes to the reference, which raises.
Strings need none either: for every code point (all of them were compared) orjson and rfc8785 both
write `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, `\u00xx` (lowercase) for the other characters below
U+0020, and everything else as raw UTF-8, U+007F, U+2028, U+2029 and `/` included; a lone surrogate
makes orjson raise, and the reference refuses it. Whatever else orjson refuses (nesting beyond 255
levels) the reference writes. tests/unit/test_encoding.py compares both paths with `rfc8785.dumps`.
"""

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

import orjson
import rfc8785

from auditor.protocol.errors import EncodingError, ProtocolError

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


def from_b64(value: object, *, field: str, length: int | None = None, max_length: int | None = None) -> bytes:
    """Decode standard base64 (with padding, no whitespace) in its one spelling of the bytes: unused bits
    of the last character must be zero ("QR==" is refused for "QQ=="), so that equal bytes are equal
    strings in every signed or hashed document; `length` is the required byte count, `max_length` the
    largest one (checked on the string first, so that an oversized value is not decoded)."""
    if not isinstance(value, str):
        raise EncodingError(f"{field}: expected a base64 string, got {type(value).__name__}")
    if max_length is not None and len(value) > 4 * -(-max_length // 3):
        raise EncodingError(f"{field}: longer than {max_length} bytes")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise EncodingError(f"{field}: not standard base64 ({exc})") from None
    if to_b64(data) != value:
        raise EncodingError(f"{field}: not canonical base64 (unused bits of the last character set)")
    if length is not None and len(data) != length:
        raise EncodingError(f"{field}: expected {length} bytes, got {len(data)}")
    if max_length is not None and len(data) > max_length:
        raise EncodingError(f"{field}: longer than {max_length} bytes")
    return data


def object_of(obj: object, where: str) -> Mapping[str, Any]:
    """`obj` as a JSON object, or a ProtocolError naming `where`."""
    if not isinstance(obj, Mapping):
        raise ProtocolError(f"{where}: expected a JSON object")
    return obj


def field_of(obj: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    """The member `name` of a JSON object, of JSON type `kind` (a bool is not an int)."""
    if name not in obj:
        raise ProtocolError(f"{where}.{name}: missing")
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{where}.{name}: expected {kind.__name__}")
    return value


def canonical_json(obj: Any) -> bytes:
    """The RFC 8785 (JCS) bytes of `obj`: what every signature and hash covers (DESIGN §3, "Encodings").

    Raises `EncodingError` for what JCS cannot represent: NaN and infinities, integers beyond
    ±(2**53 − 1) (I-JSON, RFC 7493 §2.2; a verifier holding IEEE doubles could not read them back
    exactly, so they are refused rather than rounded or written as floats), lone surrogates, keys that
    are not strings and values that are not JSON (the error names the problem)."""
    try:
        if _fast(obj):
            try:
                return orjson.dumps(obj, option=_ORJSON_JCS)
            except orjson.JSONEncodeError:
                pass  # an integer beyond 2**53 - 1, a lone surrogate, nesting beyond 255: the reference decides
        return rfc8785.dumps(obj)
    except rfc8785.IntegerDomainError as exc:
        raise EncodingError(f"canonical JSON: integer {exc} (JCS allows at most ±(2**53 - 1))") from None
    except rfc8785.FloatDomainError as exc:
        raise EncodingError(f"canonical JSON: {exc} (NaN and infinities are not JSON)") from None
    except (rfc8785.CanonicalizationError, UnicodeEncodeError) as exc:
        # UnicodeEncodeError: rfc8785 sorts keys by their UTF-16, which a lone surrogate cannot be.
        raise EncodingError(f"canonical JSON: not representable in RFC 8785 ({exc})") from None
    except RecursionError:
        raise EncodingError("canonical JSON: nested too deeply (or circular)") from None


# Sorted keys and a 53-bit integer limit: orjson then refuses exactly the integers JCS refuses.
_ORJSON_JCS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_SCALARS = frozenset({str, int, bool, type(None)})


def _fast(obj: Any) -> bool:
    """True when orjson writes the JCS bytes of `obj` (see the module docstring)."""
    kind = type(obj)
    if kind is dict:
        for key, value in obj.items():
            if type(key) is not str or not (key.isascii() or max(key) < "\ue000"):
                return False
            if type(value) not in _SCALARS and not _fast(value):
                return False
        return True
    if kind is list:
        for item in obj:  # noqa: SIM110 (a loop: all() over a generator adds a frame per item on this hot path)
            if type(item) not in _SCALARS and not _fast(item):
                return False
        return True
    return kind in _SCALARS
