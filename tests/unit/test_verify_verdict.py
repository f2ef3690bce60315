"""`coin verify-verdict` and `coin verify-receipt`: signed statements checked offline against the auditor's
key, as a customer or a journalist would."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli import build_app
from service.security import Signer

runner = CliRunner()
KEY = "ab" * 32
STATEMENT: dict[str, object] = {
    "version": "coin-verdict/2",
    "audit_id": "1d4b2f3a-7c55-4e0b-b1a8-2f5c8d9e0a11",
    "request_id": "chatcmpl-9f2c4e1a",
    "outcome": "fail",
    "evidence": {"checks": [{"name": "proof", "kind": "proof", "outcome": "fail", "figure": 1.0,
                             "threshold": None, "detail": "1 of 90 paths fail"}]},
}  # fmt: skip


@pytest.fixture
def signer() -> Signer:
    return Signer("5e" * 32, "a secret key for receipt tokens, unused here")


def _verdict_file(tmp_path: Path, document: object) -> str:
    path = tmp_path / "verdict.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def _verdict(signer: Signer, statement: dict[str, object]) -> dict[str, object]:
    return {"statement": statement, "signature": signer.sign(statement), "signing_key": signer.public_key_hex}


def test_a_signed_verdict_verifies_and_names_its_outcome(tmp_path: Path, signer: Signer) -> None:
    path = _verdict_file(tmp_path, _verdict(signer, STATEMENT))
    result = runner.invoke(build_app(), ["verify-verdict", path, "--key", signer.public_key_hex])
    assert result.exit_code == 0, result.output
    assert "valid coin-verdict/2 verdict: outcome fail" in result.stdout
    # The whole audit as GET /v1/audits/{id} returns it works too (the verdict is under `verdict`).
    whole = _verdict_file(
        tmp_path, {"audit_id": STATEMENT["audit_id"], "verdict": _verdict(signer, STATEMENT)}
    )
    assert (
        runner.invoke(build_app(), ["verify-verdict", whole, "--key", signer.public_key_hex]).exit_code == 0
    )


def test_a_changed_statement_or_another_key_is_refused(tmp_path: Path, signer: Signer) -> None:
    verdict = _verdict(signer, STATEMENT)
    tampered = {**verdict, "statement": {**STATEMENT, "outcome": "pass"}}
    result = runner.invoke(
        build_app(), ["verify-verdict", _verdict_file(tmp_path, tampered), "--key", signer.public_key_hex]
    )
    assert result.exit_code == 1 and "does not match" in result.stderr
    other = Signer("6f" * 32, "x").public_key_hex
    result = runner.invoke(build_app(), ["verify-verdict", _verdict_file(tmp_path, verdict), "--key", other])
    assert result.exit_code == 1 and "not by the expected auditor key" in result.stderr


@pytest.mark.parametrize(
    "document", [[], {"statement": {}}, {"statement": 5, "signature": "", "signing_key": ""}]
)
def test_what_is_not_a_verdict_is_exit_2(tmp_path: Path, document: object) -> None:
    result = runner.invoke(build_app(), ["verify-verdict", _verdict_file(tmp_path, document), "--key", KEY])
    assert result.exit_code == 2 and "not a verdict" in result.stderr


def test_a_malformed_key_or_statement_is_exit_2_and_a_missing_file_is_named(
    tmp_path: Path, signer: Signer
) -> None:
    verdict = _verdict(signer, STATEMENT)
    for malformed, message in (({**verdict, "signing_key": "zz"}, "signing_key (64 hex digits)"),
                               ({**verdict, "signature": "00"}, "signature (128 hex digits)"),
                               ({**verdict, "statement": {**STATEMENT, "x": float("nan")}}, "NaN")):  # fmt: skip
        result = runner.invoke(
            build_app(),
            ["verify-verdict", _verdict_file(tmp_path, malformed), "--key", signer.public_key_hex],
        )
        assert result.exit_code == 2 and "not a verdict" in result.stderr and message in result.stderr
    missing = tmp_path / "nope.json"
    result = runner.invoke(build_app(), ["verify-verdict", str(missing), "--key", signer.public_key_hex])
    assert result.exit_code == 2 and f"{missing}: cannot read (No such file or directory)" in result.stderr


def test_without_the_auditors_key_nothing_is_called_valid(tmp_path: Path) -> None:
    """A forger signs with its own key and puts that key in the file: only a key the user brings from
    GET /v1/auditor tells who signed, so the key is required and checked before the signature."""
    forger = Signer("77" * 32, "x")
    forged = _verdict_file(tmp_path, _verdict(forger, STATEMENT))
    result = runner.invoke(build_app(), ["verify-verdict", forged])
    assert result.exit_code == 2 and "--key" in result.output
    result = runner.invoke(build_app(), ["verify-verdict", forged, "--key", "not hex"])
    assert result.exit_code == 2 and "64 hex digits" in result.stderr


def test_a_receipt_is_not_a_verdict_nor_a_verdict_a_receipt(tmp_path: Path, signer: Signer) -> None:
    """Both are signed with the auditor's one key: each command takes only its own kind of statement."""
    receipt = {**RECEIPT, "auditor_key": signer.public_key_hex}
    as_verdict = _verdict(signer, receipt)
    result = runner.invoke(
        build_app(), ["verify-verdict", _verdict_file(tmp_path, as_verdict), "--key", signer.public_key_hex]
    )
    assert result.exit_code == 2 and "'coin-receipt/3', not coin-verdict/" in result.stderr
    verdict_as_receipt = {"receipt": STATEMENT, "signature": signer.sign(STATEMENT)}
    result = runner.invoke(
        build_app(),
        ["verify-receipt", _verdict_file(tmp_path, verdict_as_receipt), "--key", signer.public_key_hex],
    )
    assert result.exit_code == 2 and "not a receipt" in result.stderr


def test_a_name_twice_is_refused(tmp_path: Path, signer: Signer) -> None:
    """`{"outcome": "pass", ..., "outcome": "fail"}`: Python keeps the last, other readers the first; a
    file that readers disagree on is no verdict."""
    text = json.dumps(_verdict(signer, STATEMENT)).replace(
        '"outcome": "fail"', '"outcome": "pass", "outcome": "fail"'
    )
    path = tmp_path / "twice.json"
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(build_app(), ["verify-verdict", str(path), "--key", signer.public_key_hex])
    assert result.exit_code == 2 and "'outcome' appears twice" in result.stderr


RECEIPT: dict[str, object] = {
    "version": "coin-receipt/3",
    "report_id": "0b5e6d1e-3f0c-4d8a-9a57-1c1f8b0e2a44",
    "provider_id": "6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21",
    "request_id": "chatcmpl-9f2c4e1a",
    "digest": "ab" * 32,
    "received_at": "2026-12-14T10:00:00.000000+00:00",
    "retention_days": 30,
}


def test_a_receipt_verifies_against_the_auditors_key_and_refuses_a_change(
    tmp_path: Path, signer: Signer
) -> None:
    receipt = {**RECEIPT, "auditor_key": signer.public_key_hex}
    answer = {"receipt": receipt, "signature": signer.sign(receipt), "receipt_token": "rt_x"}
    result = runner.invoke(
        build_app(), ["verify-receipt", _verdict_file(tmp_path, answer), "--key", signer.public_key_hex]
    )
    assert result.exit_code == 0, result.output
    assert "valid coin-receipt/3 receipt: report 0b5e6d1e-3f0c-4d8a-9a57-1c1f8b0e2a44" in result.stdout
    changed = {**answer, "receipt": {**receipt, "retention_days": 3}}
    result = runner.invoke(
        build_app(), ["verify-receipt", _verdict_file(tmp_path, changed), "--key", signer.public_key_hex]
    )
    assert result.exit_code == 1 and "does not match" in result.stderr
    forger = Signer("77" * 32, "x")
    forged_receipt = {**RECEIPT, "auditor_key": forger.public_key_hex}
    forged = {"receipt": forged_receipt, "signature": forger.sign(forged_receipt)}
    result = runner.invoke(
        build_app(), ["verify-receipt", _verdict_file(tmp_path, forged), "--key", signer.public_key_hex]
    )
    assert result.exit_code == 1 and "not by the expected auditor key" in result.stderr
