"""canonical_json (DESIGN §3 "Encodings") is RFC 8785 (JCS): `rfc8785.dumps` is the reference, and the
orjson fast path writes exactly its bytes."""

import enum
import json
from typing import TypeAlias

import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.protocol.encoding import _fast, canonical_json
from auditor.protocol.errors import EncodingError

Json: TypeAlias = bool | int | float | str | list["Json"] | dict[str, "Json"] | None

MAX_SAFE = 2**53 - 1  # the JCS (I-JSON) integer range is ±MAX_SAFE

# Characters where an encoder is most likely to go wrong: every control character, DEL, the line and
# paragraph separators, escapes, the first and last BMP characters above the surrogates (which sort
# after a surrogate pair in UTF-16 but before it by code point) and characters beyond the BMP.
TRICKY = [chr(i) for i in range(0x20)] + [
    "\x7f",
    "\x80",
    "\u2028",
    "\u2029",
    '"',
    "\\",
    "/",
    "\ud7ff",
    "\ue000",
    "\ufb33",
    "\ufeff",
    "\uffff",
    "\U00010000",
    "\U0001f600",
    "\U0010ffff",
]
# Lone surrogates (category Cs) are not Unicode text: canonical_json refuses them (test below).
text = st.text(alphabet=st.characters(exclude_categories=["Cs"]) | st.sampled_from(TRICKY), max_size=12)
keys = text | st.text(alphabet="ab\ue000\U0001f600", max_size=3)  # UTF-16 vs code-point order
safe_ints = st.integers(-MAX_SAFE, MAX_SAFE) | st.sampled_from([0, 1, -1, MAX_SAFE, -MAX_SAFE])
floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 1e21, 1e-7, 1e-6, 1e16, 5e-324, 1.7976931348623157e308, 0.1 + 0.2]
)
scalars = st.none() | st.booleans() | safe_ints | text | floats
plain_scalars = st.none() | st.booleans() | safe_ints | text  # what the orjson fast path may take


def documents(leaves: st.SearchStrategy[Json], keys: st.SearchStrategy[str]) -> st.SearchStrategy[Json]:
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
        max_leaves=30,
    )


@settings(max_examples=1000)
@given(documents(scalars, keys))
def test_canonical_json_is_rfc8785(value: Json) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=1000)
@given(documents(plain_scalars, keys))
def test_fast_path_writes_the_rfc8785_bytes(value: Json) -> None:
    """Documents without floats, mostly on the fast path; its bytes are the reference bytes."""
    assert canonical_json(value) == rfc8785.dumps(value)
    if _fast(value):
        assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == rfc8785.dumps(value)


def test_orjson_escapes_every_character_as_rfc8785_does() -> None:
    """Why the fast path needs no condition on strings: for all of Unicode but the surrogates."""
    everything = "".join(chr(i) for i in range(0x110000) if not 0xD800 <= i <= 0xDFFF)
    assert orjson.dumps(everything) == rfc8785.dumps(everything)
    assert canonical_json({"k": everything}) == rfc8785.dumps({"k": everything})


def test_canonical_json_vectors() -> None:
    assert canonical_json({"b": [1, True, None], "a": "é\n\u2028", "c": 1e-05}) == (
        b'{"a":"\xc3\xa9\\n\xe2\x80\xa8","b":[1,true,null],"c":0.00001}'
    )
    assert canonical_json([("a", 1)]) == b'[["a",1]]'  # tuples are lists, as in the reference
    assert canonical_json({"figure": 0.0}) == b'{"figure":0}'
    assert canonical_json({"figure": 0.0}) == canonical_json({"figure": 0})  # one number, one spelling
    assert canonical_json(-0.0) == b"0"
    assert canonical_json(1e21) == b"1e+21"
    assert canonical_json(1e20) == b"100000000000000000000"
    assert canonical_json(1e-7) == b"1e-7"
    assert canonical_json(1e-6) == b"0.000001"
    assert canonical_json(0.5) == b"0.5"
    assert canonical_json(0.9901) == b"0.9901"
    assert canonical_json(1e16) == b"10000000000000000"
    assert canonical_json(5e-324) == b"5e-324"
    assert canonical_json([True, 1, False, 0]) == b"[true,1,false,0]"
    assert canonical_json("\x00\x1f\x7f\u2028/") == b'"\\u0000\\u001f\x7f\xe2\x80\xa8/"'
    assert canonical_json([MAX_SAFE, -MAX_SAFE]) == b"[9007199254740991,-9007199254740991]"


def test_rfc8785_section_3_2_2_example() -> None:
    value = json.loads(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    assert canonical_json(value) == (
        b'{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        b'"string":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )


def test_rfc8785_section_3_2_3_key_order() -> None:
    """Keys sort by UTF-16 code units: U+1F600 (a surrogate pair, D83D DE00) before U+FB33."""
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected_order = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert list(json.loads(canonical_json(value))) == expected_order
    assert canonical_json(value) == (
        b'{"\\r":"Carriage Return","1":"One","\xc2\x80":"Control",'
        b'"\xc3\xb6":"Latin Small Letter O With Diaeresis","\xe2\x82\xac":"Euro Sign",'
        b'"\xf0\x9f\x98\x80":"Emoji: Grinning Face","\xef\xac\xb3":"Hebrew Letter Dalet With Dagesh"}'
    )
    # Code-point order, which orjson uses, puts them the other way round: such keys avoid the fast path.
    assert not _fast(value)
    assert canonical_json({"\ue000": 1, "\U0001f600": 2}) == b'{"\xf0\x9f\x98\x80":2,"\xee\x80\x80":1}'


def test_fast_path_takes_plain_values_only() -> None:
    class Label(enum.StrEnum):
        A = "a"

    class Count(enum.IntEnum):
        ONE = 1

    report = {"request_id": "r", "usage": {"reasoning_tokens": 7, "raw": None}, "ok": [True, "é", "😀"]}
    assert _fast(report)
    assert _fast({"é": 1, "\ud7ff": 2})
    assert not _fast({"x": 0.5})
    assert not _fast({"\ue000": 1})
    assert not _fast({"\U0001f600": 1})
    assert not _fast({Label.A: 1})
    assert not _fast([Label.A])
    assert not _fast([Count.ONE])
    assert not _fast((1, 2))
    assert not _fast({1: 2})
    # Whatever the path, the bytes are the reference bytes.
    assert canonical_json({Label.A: Label.A, "n": Count.ONE}) == b'{"a":"a","n":1}'


@pytest.mark.parametrize("number", [MAX_SAFE + 1, -MAX_SAFE - 1, 2**63, 2**64, -(2**70)])
def test_canonical_json_refuses_integers_beyond_the_jcs_range(number: int) -> None:
    for value in (number, {"big": number}, {"big": [number], "float": 0.5}):  # fast path and reference
        with pytest.raises(EncodingError, match="integer"):
            canonical_json(value)


def test_canonical_json_refuses_what_is_not_json() -> None:
    with pytest.raises(ValueError):
        canonical_json(float("nan"))
    value: object
    for value in (float("nan"), float("inf"), -float("inf"), {"figure": float("nan")}):
        with pytest.raises(EncodingError, match="not representable"):
            canonical_json(value)
    for value in ("\ud800", {"k": "a\udfff"}, {"\ud800": 1}):  # lone surrogates are not UTF-8
        with pytest.raises(EncodingError):
            canonical_json(value)
    with pytest.raises(EncodingError, match="keys must be strings"):
        canonical_json({1: 2})
    with pytest.raises(EncodingError, match="unsupported type"):
        canonical_json({"when": {1, 2}})
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(EncodingError, match="nested too deeply"):
        canonical_json(circular)
