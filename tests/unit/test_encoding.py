"""canonical_json (DESIGN §3 "Encodings"): the orjson fast path writes exactly the reference bytes."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.protocol.encoding import canonical_json


def reference(value: object) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


text = st.text(alphabet=st.characters(exclude_categories=["Cs"]))  # lone surrogates are not UTF-8
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | text
    | st.floats(allow_nan=False, allow_infinity=False)
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=500)
@given(documents)
def test_canonical_json_is_the_reference_encoding(value):
    assert canonical_json(value) == reference(value)


def test_canonical_json_vectors():
    assert canonical_json({"b": [1, True, None], "a": "é\n\u2028", "c": 1e-05}) == (
        b'{"a":"\xc3\xa9\\n\xe2\x80\xa8","b":[1,true,null],"c":1e-05}'
    )
    assert canonical_json({"big": 2**64}) == b'{"big":18446744073709551616}'
    assert canonical_json([("a", 1)]) == b'[["a",1]]'  # tuples are lists, as in the reference


def test_canonical_json_refuses_what_is_not_json():
    with pytest.raises(ValueError):
        canonical_json(float("nan"))
    with pytest.raises(UnicodeEncodeError):
        canonical_json("\ud800")
