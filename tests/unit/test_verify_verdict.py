"""`coin verify-verdict`: a signed verdict checked offline, as a customer or a journalist would."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli import build_app
from service.security import Signer

runner = CliRunner()
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
    assert runner.invoke(build_app(), ["verify-verdict", whole]).exit_code == 0


def test_a_changed_statement_or_another_key_is_refused(tmp_path: Path, signer: Signer) -> None:
    verdict = _verdict(signer, STATEMENT)
    tampered = {**verdict, "statement": {**STATEMENT, "outcome": "pass"}}
    result = runner.invoke(build_app(), ["verify-verdict", _verdict_file(tmp_path, tampered)])
    assert result.exit_code == 1 and "does not match" in result.stderr
    other = Signer("6f" * 32, "x").public_key_hex
    result = runner.invoke(build_app(), ["verify-verdict", _verdict_file(tmp_path, verdict), "--key", other])
    assert result.exit_code == 1 and "not by the expected auditor key" in result.stderr


@pytest.mark.parametrize(
    "document", [[], {"statement": {}}, {"statement": 5, "signature": "", "signing_key": ""}]
)
def test_what_is_not_a_verdict_is_exit_2(tmp_path: Path, document: object) -> None:
    result = runner.invoke(build_app(), ["verify-verdict", _verdict_file(tmp_path, document)])
    assert result.exit_code == 2 and "not a verdict" in result.stderr


def test_a_malformed_key_or_statement_is_exit_2_and_a_missing_file_is_named(
    tmp_path: Path, signer: Signer
) -> None:
    verdict = _verdict(signer, STATEMENT)
    for malformed, message in (({**verdict, "signing_key": "zz"}, "signing_key (64 hex digits)"),
                               ({**verdict, "signature": "00"}, "signature (128 hex digits)"),
                               ({**verdict, "statement": {**STATEMENT, "x": float("nan")}}, "NaN")):  # fmt: skip
        result = runner.invoke(build_app(), ["verify-verdict", _verdict_file(tmp_path, malformed)])
        assert result.exit_code == 2 and "not a verdict" in result.stderr and message in result.stderr
    missing = tmp_path / "nope.json"
    result = runner.invoke(build_app(), ["verify-verdict", str(missing)])
    assert result.exit_code == 2 and f"{missing}: cannot read (No such file or directory)" in result.stderr
