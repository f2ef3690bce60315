"""A signed verdict verifies outside Python: Node's own RFC 8785 canonicalisation and Ed25519 check
(tests/unit/verify_signature.mjs, no npm packages) accept the auditor's signature and refuse a changed
statement. Needs `node` on PATH: without it the tests FAIL when CI is set and are skipped otherwise."""

import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from auditor.protocol.encoding import canonical_json
from service.security import Signer

SCRIPT = Path(__file__).with_name("verify_signature.mjs")


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        message = "node is not on PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so the Node signature check must not be skipped")
        pytest.skip(message)
    return found


def statement() -> dict[str, Any]:
    """Verdict-like, with what canonical encoders disagree on: floats, key order, non-ASCII text."""
    return {
        "version": "coin-verdict/2",
        "audit_id": "6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21",
        "report_id": "0b5e6d1e-3f0c-4d8a-9a57-1c1f8b0e2a44",
        "request_id": "chatcmpl-9f2c4e1a «résumé» 😀",
        "reasoning_tokens": 1187,
        "outcome": "pass",
        "evidence": {
            "checks": [
                {"name": "count", "passed": True, "figure": 0.0},
                {"name": "semantic", "passed": True, "figure": 0.5},
                {"name": "tiny", "passed": False, "figure": 1e-7, "threshold": 1e21},
                {"name": "negative", "figure": -0.0, "ratio": 0.1 + 0.2, "note": None},
            ],
            "count_openings": 90,
            "detection_probability_at_5_percent": 0.9901,
            "exposure": {"blocks": [0, 3, 17], "tokens": 0.125},
        },
        "labels": {"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001f600": 5, "\u0080": 6, "\u00f6": 7},
        "text": 'line\nbreak\ttab "quoted" \\ \x00\x1f\x7f \u2028\u2029 \ue000 \U0010ffff',
        "decided_by": {"embd_id": "all-MiniLM-L6-v2@8087e9bf97c265f8", "heads": None},
        "decided_at": "2025-01-01T12:00:00.000000+00:00",
    }


def run_node(node: str, path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([node, str(SCRIPT), str(path), *args], capture_output=True, timeout=60)


def write_signed(path: Path, signer: Signer, content: dict[str, Any], signature: str) -> Path:
    document = {"statement": content, "signature": signature, "public_key": signer.public_key_hex}
    path.write_text(json.dumps(document), encoding="utf-8")  # ASCII with \u escapes: Node must decode them
    return path


def test_signed_verdict_verifies_in_node(node: str, tmp_path: Path) -> None:
    signer = Signer("5e" * 32, "x" * 32)
    content = statement()
    signature = signer.sign(content)

    signed = write_signed(tmp_path / "signed.json", signer, content, signature)
    result = run_node(node, signed, signer.public_key_hex)
    assert (result.returncode, result.stdout.strip()) == (0, b"ok"), result.stderr.decode()

    canonical = run_node(node, signed, "--print-canonical")
    assert canonical.returncode == 0, canonical.stderr.decode()
    assert canonical.stdout == canonical_json(content)

    changed = statement()
    changed["evidence"]["checks"][1]["figure"] = 0.25
    tampered = write_signed(tmp_path / "tampered.json", signer, changed, signature)
    result = run_node(node, tampered, signer.public_key_hex)
    assert (result.returncode, result.stdout.strip()) == (1, b"bad"), result.stderr.decode()

    # The same numbers, spelled otherwise (0 for 0.0, 1e-07 for 1e-7): one JCS text, still valid.
    respelled = tmp_path / "respelled.json"
    respelled.write_text(
        signed.read_text(encoding="utf-8").replace('"figure": 0.0', '"figure": 0').replace("1e-07", "1e-7"),
        encoding="utf-8",
    )
    assert respelled.read_text(encoding="utf-8") != signed.read_text(encoding="utf-8")
    result = run_node(node, respelled, signer.public_key_hex)
    assert (result.returncode, result.stdout.strip()) == (0, b"ok"), result.stderr.decode()


def test_only_the_auditors_key_is_trusted_and_hex_is_strict(node: str, tmp_path: Path) -> None:
    """A forger's own key in the file, the identity point with an all-zero signature (which Node's
    Ed25519 accepts for any message), and hex with trailing junk (which Buffer.from ignores)."""
    auditor, forger = Signer("5e" * 32, "x" * 32), Signer("77" * 32, "x" * 32)
    content = statement()
    forged = write_signed(tmp_path / "forged.json", forger, content, forger.sign(content))
    result = run_node(node, forged, auditor.public_key_hex)
    assert (result.returncode, result.stdout.strip()) == (1, b"bad"), result.stderr.decode()
    identity = "01" + "00" * 31
    small_order = tmp_path / "small.json"
    small_order.write_text(
        json.dumps({"statement": content, "signature": identity + "00" * 32, "public_key": identity})
    )
    result = run_node(node, small_order, auditor.public_key_hex)
    assert (result.returncode, result.stdout.strip()) == (1, b"bad"), result.stderr.decode()
    signature = auditor.sign(content)
    for junk, what in ((signature + "zz", b"signature"), (signature[:-2] + "zz", b"signature")):
        path = write_signed(tmp_path / "junk.json", auditor, content, junk)
        result = run_node(node, path, auditor.public_key_hex)
        assert result.returncode == 2 and what in result.stderr, result
    result = run_node(
        node, write_signed(tmp_path / "ok.json", auditor, content, signature), auditor.public_key_hex + "0"
    )
    assert result.returncode == 2 and b"KEY: expected 64 hex digits" in result.stderr


def test_numbers_and_key_order_match_javascript(node: str, tmp_path: Path) -> None:
    """Python's JCS bytes are JavaScript's for many doubles (random bit patterns) and tricky keys."""
    rng = random.Random(8785)
    doubles = [0.0, 5e-324, 1.7976931348623157e308, 2.0**53, 1e16, 1e-6, 1e-7, 1e20, 1e21, 0.1 + 0.2]
    while len(doubles) < 2000:
        (x,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if x == x and abs(x) != float("inf"):
            doubles.append(x)
    doubles += [rng.uniform(-1e6, 1e6) for _ in range(500)] + [rng.random() for _ in range(500)]
    alphabet = ["a", "é", "\u2028", "\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0001f600", "\x01"]
    keys = {"".join(rng.choices(alphabet, k=rng.randint(0, 4))): i for i in range(300)}
    content = {"doubles": doubles, "keys": keys, "ints": [2**53 - 1, -(2**53 - 1), 0, -1]}
    path = write_signed(tmp_path / "numbers.json", Signer("5e" * 32, "x" * 32), content, "00" * 64)
    canonical = run_node(node, path, "--print-canonical")
    assert canonical.returncode == 0, canonical.stderr.decode()
    assert canonical.stdout == canonical_json(content)
