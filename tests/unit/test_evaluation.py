"""The evaluation harness (auditor.research.evaluation): statistics, the simulated providers, the report.

The end-to-end runs use the hash stand-in for Embd from test_semantic (fast, deterministic): they test
the protocol plumbing and the report, not detection quality (that is `coin eval`'s job)."""

import json
import random
from pathlib import Path

import pytest

from auditor.protocol.errors import ModelError, ProtocolError
from auditor.protocol.tokenize import get_tokenizer
from auditor.research.attacks import AttackContext, inflate
from auditor.research.evaluation.report import write_report
from auditor.research.evaluation.run import (
    Auditor,
    AuditOutcome,
    EvalConfig,
    reference_suites,
    run_evaluation,
)
from auditor.research.evaluation.summary import summarise, wilson
from auditor.research.traces import load_traces, split_reference, split_traces
from auditor.research.training import calibrate_on_reference
from auditor.semantic.checks import SemanticSuite
from auditor.semantic.heads import load_heads

from .test_semantic import HashEmbedder

TRACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "traces"


@pytest.fixture(scope="module")
def setup():
    embedder = HashEmbedder()
    heads = load_heads()
    heads.embd_id = embedder.embd_id
    tokenizer = get_tokenizer("qwen2")
    traces = load_traces([TRACES / "thinkingllms_general_r1distill.jsonl"])[:30]
    return embedder, SemanticSuite(heads, tokenizer), traces


def test_wilson_interval():
    low, high = wilson(0, 100)
    assert low == 0.0 and high == pytest.approx(0.037, abs=0.001)
    low, high = wilson(95, 100)
    assert low == pytest.approx(0.888, abs=0.002) and high == pytest.approx(0.978, abs=0.002)
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("attack", ["overclaim", "coin_padding"])
def test_structural_attacks_fail_the_count_proofs(setup, attack):
    embedder, suite, traces = setup
    ctx = AttackContext(suite.tokenizer, traces)
    auditor = Auditor(embedder, suite, EvalConfig())
    trace = traces[0]
    inflated = inflate(trace, attack, 0.5, random.Random(0), ctx)
    outcome = auditor.audit(trace, inflated.tokens, inflated, random.Random(0))
    assert outcome.verdict == "fail" and "proof" in outcome.failed_checks


def test_honest_commitments_pass_checks_one_to_three(setup):
    embedder, suite, traces = setup
    ctx = AttackContext(suite.tokenizer, traces)
    auditor = Auditor(embedder, suite, EvalConfig())
    outcome = auditor.audit(traces[1], ctx.tokens(traces[1]), None, random.Random(0))
    assert not {"proof", "block_consistency", "token_embedding"} & set(outcome.failed_checks)
    assert 0 < outcome.block_exposure <= 0.25 and 0 < outcome.token_visibility <= 0.0625


def test_run_evaluation_writes_the_report(setup, tmp_path):
    embedder, suite, traces = setup
    config = EvalConfig(
        attacks=("random_tokens", "overclaim"), irs=(0.5, 1.0), traces_per_cell=3, honest_traces=4
    )
    outcomes = run_evaluation(traces, embedder, suite, config)
    assert len(outcomes) == 4 + 2 * 2 * 3
    report = write_report(
        outcomes, config, tmp_path, {"trace_files": ["x.jsonl"], "domains": ["d"]}, log=lambda _: None
    )
    data = json.loads((tmp_path / "report.json").read_text())
    for key in ("false_positive_rate", "mean_block_exposure", "mean_token_visibility", "detection"):
        assert key in data
    row = data["detection"][0]
    assert {"attack", "ir", "detection_rate", "ci_low", "ci_high", "n"} <= set(row)
    assert [r["attack"] for r in report["detection"]] == ["random_tokens"] * 2 + ["overclaim"] * 2
    assert all(r["detection_rate"] == 1.0 for r in data["detection"] if r["attack"] == "overclaim")
    # The sampling ceiling is reported for content attacks only; random tokens spread over the whole
    # trace at IR >= 0.5 land in some revealed block of every plan.
    assert all(r["reachable_rate"] is None for r in data["detection"] if r["attack"] == "overclaim")
    assert all(
        0 <= r["token_reachable_rate"] <= 1 for r in data["detection"] if r["attack"] == "random_tokens"
    )
    assert all(r["reachable_rate"] == 1.0 for r in data["detection"] if r["attack"] == "random_tokens")
    assert "| random_tokens |" in (tmp_path / "report.md").read_text()
    assert "## Sampling ceiling" in (tmp_path / "report.md").read_text()
    for name in ("detection_vs_ir.png", "roc.png", "outcomes.jsonl"):
        assert (tmp_path / name).stat().st_size > 0


def test_summary_counts_per_domain():
    def outcome(attack, domain, verdict, ir=0.0, reachable=None):
        return AuditOutcome("t", domain, attack, ir, ir, verdict, (), 0.5, 1, 0.2, 0.01, reachable, reachable)

    outcomes = [outcome("honest", "a", "pass"), outcome("honest", "b", "fail")]
    outcomes += [outcome("filler", "a", "fail", 1.0, True), outcome("filler", "b", "pass", 1.0, False)]
    report = summarise(outcomes, EvalConfig(attacks=("filler",)), {})
    assert report["false_positive_rate"] == 0.5 and report["honest_n"] == 2
    assert report["detection"][0]["detection_rate"] == 0.5
    assert report["detection"][0]["reachable_rate"] == report["detection"][0]["token_reachable_rate"] == 0.5
    assert {row["domain"] for row in report["per_domain"]} == {"a", "b"}


def test_split_holds_out_domains_and_questions():
    traces = load_traces([TRACES])
    split = split_traces(traces)
    assert {t.domain for t in split.test} == {"general_reasoning", "medical"}
    assert not {t.domain for t in split.train} & {"general_reasoning", "medical"}
    assert not {t.question for t in split.train} & {t.question for t in split.validation}
    assert not {t.id for t in split.train} & {t.id for t in split.validation}


def test_reference_traces_share_no_question_with_the_evaluated_ones():
    traces = load_traces([TRACES / "thinkingllms_general_r1distill.jsonl"])
    reference, evaluated = split_reference(traces, 0.3, seed=0)
    assert len(reference) + len(evaluated) == len(traces)
    assert not {t.question for t in reference} & {t.question for t in evaluated}
    assert 0.2 < len(reference) / len(traces) < 0.4
    assert split_reference(traces, 0.3, seed=0) == (reference, evaluated)  # stable
    with pytest.raises(ProtocolError, match="share"):
        split_reference(traces, 0.0)


def test_per_domain_calibration_refits_thresholds_on_reference_traces(setup):
    embedder, suite, traces = setup
    shipped = dict(suite.heads.calibration)
    config = EvalConfig(attacks=("random_tokens",), irs=(1.0,), traces_per_cell=2, honest_traces=3)
    suites = reference_suites(traces[:12], suite, embedder, config)
    assert set(suites) == {"general_reasoning"}
    refit = suites["general_reasoning"].heads
    assert refit.calibration.keys() == shipped.keys() and refit.calibration != shipped
    assert refit.calibration["target_fpr"] == shipped["target_fpr"]
    assert refit.metrics["reference_calibration"]["traces"] == 12
    assert suite.heads.calibration == shipped  # the shipped bundle is untouched
    outcomes = run_evaluation(traces[12:], embedder, suite, config, domain_suites=suites)
    assert len(outcomes) == 3 + 2
    with pytest.raises(ModelError, match="no reference traces"):
        calibrate_on_reference(
            suite.heads, [], suite.tokenizer, embedder, config.policy, block_size=16, target_fpr=0.01, seed=0
        )
    with pytest.raises(ModelError, match="target"):
        calibrate_on_reference(
            suite.heads,
            traces[:2],
            suite.tokenizer,
            embedder,
            config.policy,
            block_size=16,
            target_fpr=1.0,
            seed=0,
        )


def test_cli_rejects_bad_options_before_loading_anything(tmp_path):
    from typer.testing import CliRunner

    from auditor.cli.science import app

    runner = CliRunner()
    base = ["eval", "--traces", str(TRACES), "--out", str(tmp_path)]
    result = runner.invoke(app, [*base, "--attacks", "nonsense"])
    assert result.exit_code != 0 and "unknown attacks" in result.output
    result = runner.invoke(app, [*base, "--ir", "0.5,abc"])
    assert result.exit_code != 0 and "comma-separated" in result.output
    result = runner.invoke(app, [*base, "--verifier", "magic"])
    assert result.exit_code != 0
    result = runner.invoke(app, [*base, "--rounds", "0"])
    assert result.exit_code != 0 and "at least 1" in result.output
    result = runner.invoke(app, [*base, "--reference-share", "1.5"])
    assert result.exit_code != 0 and "reference-share" in result.output
    result = runner.invoke(app, ["train-heads", "--block-size", "8", "--out", str(tmp_path / "h.pt")])
    assert result.exit_code != 0 and "16..1024" in result.output
    result = runner.invoke(app, ["train-heads", "--attacks", "overclaim", "--out", str(tmp_path / "h.pt")])
    assert result.exit_code != 0 and "attacks: some of" in result.output
    assert not (tmp_path / "h.pt").exists()
