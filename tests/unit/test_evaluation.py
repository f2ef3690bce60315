"""The evaluation harness (auditor.research.evaluation): statistics, the simulated providers, the report.

The end-to-end runs use the hash stand-in for Embd from test_semantic (fast, deterministic): they test
the protocol plumbing and the report, not detection quality (that is `coin eval`'s job)."""

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from auditor.protocol.copies import COPY_RULE, CopyRule
from auditor.protocol.errors import ProtocolError
from auditor.protocol.tokenize import get_tokenizer
from auditor.research.attacks import AttackContext, inflate
from auditor.research.copy_rates import figures_of, fitted_rule
from auditor.research.evaluation.lodo import fold_config, run_lodo, summarise_lodo
from auditor.research.evaluation.report import rerender_lodo_report, write_lodo_report, write_report
from auditor.research.evaluation.run import Auditor, AuditOutcome, EvalConfig, run_evaluation
from auditor.research.evaluation.summary import length_band, summarise, wilson
from auditor.research.traces import Trace, load_traces, model_family, split_traces
from auditor.research.training import TrainConfig, train_heads
from auditor.semantic.checks import SemanticSuite
from auditor.semantic.heads import load_heads

from .test_semantic import HashEmbedder

TRACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "traces"


@pytest.fixture(scope="module")
def setup() -> tuple[HashEmbedder, SemanticSuite, list[Trace]]:
    embedder = HashEmbedder()
    heads = load_heads()
    heads.embd_id = embedder.embd_id
    tokenizer = get_tokenizer("qwen2")
    traces = load_traces([TRACES / "thinkingllms_general_r1distill.jsonl"])[:30]
    return embedder, SemanticSuite(heads, tokenizer), traces


def test_wilson_interval() -> None:
    low, high = wilson(0, 100)
    assert low == 0.0 and high == pytest.approx(0.037, abs=0.001)
    low, high = wilson(95, 100)
    assert low == pytest.approx(0.888, abs=0.002) and high == pytest.approx(0.978, abs=0.002)
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("attack", ["overclaim", "coin_padding"])
def test_structural_attacks_fail_the_count_proofs(
    setup: tuple[HashEmbedder, SemanticSuite, list[Trace]], attack: str
) -> None:
    embedder, suite, traces = setup
    ctx = AttackContext(suite.tokenizer, traces)
    auditor = Auditor(embedder, suite, EvalConfig())
    trace = traces[0]
    inflated = inflate(trace, attack, 0.5, random.Random(0), ctx)
    outcome = auditor.audit(trace, inflated.tokens, inflated, random.Random(0), len(ctx.tokens(trace)))
    assert outcome.verdict == "fail" and "proof" in outcome.failed_checks


def test_honest_commitments_pass_checks_one_to_three(
    setup: tuple[HashEmbedder, SemanticSuite, list[Trace]],
) -> None:
    embedder, suite, traces = setup
    ctx = AttackContext(suite.tokenizer, traces)
    auditor = Auditor(embedder, suite, EvalConfig())
    outcome = auditor.audit(
        traces[1], ctx.tokens(traces[1]), None, random.Random(0), len(ctx.tokens(traces[1]))
    )
    assert not {"proof", "block_consistency", "token_embedding"} & set(outcome.failed_checks)
    assert 0 < outcome.block_exposure <= 0.25 and 0 < outcome.token_visibility <= 0.0625


def test_audits_apply_the_configured_copy_rule(
    setup: tuple[HashEmbedder, SemanticSuite, list[Trace]],
) -> None:
    """`EvalConfig.copy_rule` is the rule copied_spans applies (a fold's own); None: the shipped one."""
    embedder, suite, traces = setup
    ctx = AttackContext(suite.tokenizer, traces)
    trace = next(t for t in traces if figures_of(ctx.tokens(t), t.id).copied >= 1)
    tokens = ctx.tokens(trace)
    strict = CopyRule(copied=1e-6, repeated=1e-6, min_tokens=1, label="strict")
    shipped = Auditor(embedder, suite, EvalConfig()).audit(trace, tokens, None, random.Random(0), len(tokens))
    failed = Auditor(embedder, suite, EvalConfig(copy_rule=strict)).audit(
        trace, tokens, None, random.Random(0), len(tokens)
    )
    assert "copied_spans" not in shipped.failed_checks
    assert failed.verdict == "fail" and "copied_spans" in failed.failed_checks


def test_a_fold_fits_its_copy_rule_without_its_domain() -> None:
    """A fold's copy rule is the tail fit on the other domains' honest traces, as the copy bench's
    leave-one-domain-out fits it; a rule the caller set is kept."""
    tokenizer = get_tokenizer("qwen2")
    general = load_traces([TRACES / "thinkingllms_general_r1distill.jsonl"])
    medical = load_traces([TRACES / "huatuogpt_o1_medical_gpt4o_cot.jsonl"])[:20]
    config = fold_config(EvalConfig(), general + medical, "medical", tokenizer)
    expected = fitted_rule([figures_of(tokenizer.tokenize(t.reasoning), t.id) for t in general])
    assert config.copy_rule is not None and config.copy_rule.label == "without-medical"
    assert (config.copy_rule.copied, config.copy_rule.repeated) == (expected.copied, expected.repeated)
    assert config.copy_rule.min_tokens == COPY_RULE.min_tokens
    chosen = EvalConfig(copy_rule=COPY_RULE)
    assert fold_config(chosen, general + medical, "medical", tokenizer) is chosen
    # Too few traces outside the domain to fit a tail: refused, not the shipped rule in silence.
    with pytest.raises(ProtocolError, match="cannot fit a copy rule"):
        fold_config(EvalConfig(), general + medical, "general_reasoning", tokenizer)


def test_run_evaluation_writes_the_report(
    setup: tuple[HashEmbedder, SemanticSuite, list[Trace]], tmp_path: Path
) -> None:
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
    for key in ("honest", "honest_by_length", "mean_block_exposure", "mean_token_visibility", "detection"):
        assert key in data
    assert set(data["headline"]) == {"fail_rate_honest", "suspect_rate_honest", "detection_ir05_min"}
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


def outcome(
    attack: str,
    domain: str,
    verdict: str,
    ir: float = 0.0,
    reachable: bool | None = None,
    tokens: int = 300,
    family: str = "qwq",
    p: float = 0.5,
) -> AuditOutcome:
    failed = ("proof",) if verdict == "fail" else ()
    flagged = ("verifier",) if verdict == "suspect" else ()
    return AuditOutcome(
        "t",
        domain,
        family,
        tokens,
        attack,
        ir,
        ir,
        verdict,
        failed,
        flagged,
        p,
        1,
        0.2,
        0.01,
        reachable,
        reachable,
    )


def test_summary_separates_fail_from_suspect_per_domain_length_and_family() -> None:
    outcomes = [
        outcome("honest", "a", "pass"),
        outcome("honest", "b", "suspect", tokens=3000, family="gpt-4o"),
        outcome("honest", "b", "pass", tokens=900),
        outcome("honest", "a", "pass", tokens=900),
    ]
    outcomes += [outcome("filler", "a", "suspect", 0.5, True), outcome("filler", "b", "pass", 0.5, False)]
    outcomes += [outcome("filler", "a", "fail", 1.0, True)]
    report = summarise(outcomes, EvalConfig(attacks=("filler",)), {})
    assert report["honest"]["fail"]["rate"] == 0.0 and report["honest"]["suspect"]["rate"] == 0.25
    assert report["honest"]["flagged_checks"] == {"verifier": 1}
    assert report["honest_by_domain"]["b"]["suspect"]["rate"] == 0.5
    assert report["honest_by_length"]["> 2,000"]["suspect"] == {
        "rate": 1.0,
        "ci_low": pytest.approx(0.2065, abs=1e-3),
        "ci_high": 1.0,
        "n": 1,
    }
    assert report["honest_by_length"]["500–2,000"]["suspect"]["n"] == 2
    assert report["honest_by_model_family"]["gpt-4o"]["suspect"]["rate"] == 1.0
    # Detection counts `fail` and `suspect`; the fail-only rate is reported beside it.
    half, full = report["detection"]
    assert (half["ir"], half["detection_rate"], half["fail_rate"]) == (0.5, 0.5, 0.0)
    assert (full["detection_rate"], full["fail_rate"]) == (1.0, 1.0)
    assert half["reachable_rate"] == half["token_reachable_rate"] == 0.5
    assert report["headline"] == {
        "fail_rate_honest": 0.0,
        "suspect_rate_honest": 0.25,
        "detection_ir05_min": 0.5,
    }


def test_length_bands_and_model_families() -> None:
    assert [length_band(n) for n in (0, 499, 500, 1999, 2000, 10**6)] == [
        "< 500", "< 500", "500–2,000", "500–2,000", "> 2,000", "> 2,000"
    ]  # fmt: skip
    assert model_family("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B") == "r1-distill"
    assert model_family("Sky-T1-32B-correct-5K") == "sky-t1"
    assert model_family("qwen3-235b-a22b-thinking") == "qwen3"
    assert model_family("gpt-4o") == "gpt-4o" and model_family("something-new") == "other"


def test_lodo_summary_reports_the_worst_fold_and_band(tmp_path: Path) -> None:
    folds = {
        "a": [outcome("honest", "a", "pass")] * 9 + [outcome("honest", "a", "suspect")]
        + [outcome("honest", "a", "pass", tokens=5000)] * 4
        + [outcome("filler", "a", "suspect", 0.5)] * 3 + [outcome("filler", "a", "pass", 0.5)],
        "b": [outcome("honest", "b", "pass", tokens=5000)] * 3 + [outcome("honest", "b", "suspect", tokens=5000)]
        + [outcome("honest", "b", "pass")] * 6
        + [outcome("filler", "b", "suspect", 0.5)] + [outcome("filler", "b", "pass", 0.5)],
    }  # fmt: skip
    report = summarise_lodo(folds, EvalConfig(attacks=("filler",)), {})
    assert report["folds"]["a"]["honest"]["suspect"]["rate"] == 1 / 14
    assert report["folds"]["b"]["honest"]["suspect"]["rate"] == 0.1
    assert report["honest_by_length"]["> 2,000"]["suspect"]["rate"] == 0.125  # pooled over the folds
    assert report["honest"]["suspect"]["n"] == 24
    # The worst fold or fold × length band (b over 2,000 tokens: 1 of 4), not a band pooled over folds;
    # detection: the worst fold of each content attack, and of every attack × IR beside the pooled rate.
    assert report["headline"] == {
        "fail_rate_honest_max": 0.0,
        "suspect_rate_honest_max": 0.25,
        "detection_ir05_min": 0.5,
    }
    worst = report["honest_worst_cell"]["suspect"]
    assert (worst["domain"], worst["band"], worst["n"]) == ("b", "> 2,000", 4)
    assert report["detection_ir05_worst_fold"] == {"filler": 0.5}
    assert report["detection"][0]["detection_rate"] == 4 / 6
    assert [
        (w["attack"], w["ir"], w["domain"], w["detection_rate"]) for w in report["detection_worst_fold"]
    ] == [("filler", 0.5, "b", 0.5)]
    # Re-rendered from report.json alone: the same figures, derived again, and the Markdown shows them.
    (tmp_path / "report.json").write_text(json.dumps(report))
    again = rerender_lodo_report(tmp_path, log=lambda _: None)
    assert again["headline"] == report["headline"] and "rerendered" in again["meta"]
    text = (tmp_path / "report.md").read_text()
    assert "worst 50.0% b" in text and "`suspect`: b, > 2,000 tokens, n = 4" in text


def test_lodo_trains_without_each_domain_and_resumes(tmp_path: Path) -> None:
    embedder = HashEmbedder()
    tokenizer = get_tokenizer("qwen2")
    traces = [
        *load_traces([TRACES / "thinkingllms_general_r1distill.jsonl"])[:24],
        *load_traces([TRACES / "huatuogpt_o1_medical_gpt4o_cot.jsonl"])[:24],
    ]
    # One domain left to train on per fold: no other_domain attack to train with.
    train = TrainConfig(
        heads_traces=8,
        model_traces=6,
        head_epochs=1,
        model_epochs=5,
        max_blocks=4,
        attacks=("random_tokens",),
    )
    # 24 traces outside a fold cannot fit a copy rule's tail: the run is given one, and records it.
    rule = CopyRule(copied=0.3, repeated=0.7, label="given")
    config = EvalConfig(
        attacks=("random_tokens", "overclaim"), irs=(1.0,), traces_per_cell=2, honest_traces=3, copy_rule=rule
    )
    folds = run_lodo(traces, embedder, tokenizer, train, config, tmp_path, log=lambda _: None)
    assert set(folds) == {"general_reasoning", "medical"}
    for domain, outcomes in folds.items():
        assert {o.domain for o in outcomes} == {domain}  # each fold audits only its left-out domain
        assert len(outcomes) == 3 + 2 * 2
        checkpoint = load_heads(tmp_path / f"fold-{domain}" / "heads.pt")
        assert checkpoint.metrics["domains"] == sorted({"general_reasoning", "medical"} - {domain})
    # A finished fold is read back, not recomputed.
    before = (tmp_path / "fold-medical" / "outcomes.jsonl").stat().st_mtime_ns
    again = run_lodo(traces, embedder, tokenizer, train, config, tmp_path, log=lambda _: None)
    assert again == folds and (tmp_path / "fold-medical" / "outcomes.jsonl").stat().st_mtime_ns == before
    # Outcomes audited under other settings are refused, not mixed into the report.
    with pytest.raises(ProtocolError, match="audited with other copy_rule"):
        run_lodo(traces, embedder, tokenizer, train, replace(config, copy_rule=COPY_RULE), tmp_path)
    report = write_lodo_report(folds, config, tmp_path, {"domains": sorted(folds)}, log=lambda _: None)
    assert set(report["headline"]) == {
        "fail_rate_honest_max",
        "suspect_rate_honest_max",
        "detection_ir05_min",
    }
    run = report["meta"]["fold_runs"]["medical"]
    assert run["checkpoint"] == load_heads(tmp_path / "fold-medical" / "heads.pt").checkpoint_id
    assert run["trained_on"] == ["general_reasoning"] and run["protocol"] == config.protocol
    assert run["copy_rule"]["label"] == "given" and report["folds"]["medical"]["meta"]["fold_run"] == run
    assert "code" in report["meta"]  # the git commit, or None outside a checkout
    assert "## Folds" in (tmp_path / "report.md").read_text()
    assert "copy rule given" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "fold-medical" / "detection_vs_ir.png").stat().st_size > 0


def test_the_shift_margin_is_recorded_and_only_lowers_thresholds(tmp_path: Path) -> None:
    """By default the checkpoint records the domain-shift margin it was calibrated with (at least 1);
    `--no-shift-margin` calibrates on the plain composite null and records none."""
    traces = [
        *load_traces([TRACES / "thinkingllms_general_r1distill.jsonl"])[:90],
        *load_traces([TRACES / "huatuogpt_o1_medical_gpt4o_cot.jsonl"])[:90],
    ]
    split = split_traces(traces, held_out_domains=())
    small: dict[str, Any] = {
        "heads_traces": 8,
        "model_traces": 6,
        "head_epochs": 1,
        "model_epochs": 5,
        "max_blocks": 4,
    }
    tokenizer, embedder = get_tokenizer("qwen2"), HashEmbedder()
    with_margin = train_heads(
        split.train,
        split.validation,
        tokenizer,
        embedder,
        TrainConfig(**small),
        out=tmp_path / "margin.pt",
        log=lambda _: None,
    )
    plain = train_heads(
        split.train,
        split.validation,
        tokenizer,
        embedder,
        TrainConfig(**small, shift_margin=False),
        out=tmp_path / "plain.pt",
        log=lambda _: None,
    )
    margin = with_margin.calibration["verifier_shift_margin"]
    assert margin >= 1.0 and "verifier_shift_margin" not in plain.calibration
    assert load_heads(tmp_path / "margin.pt").calibration["verifier_shift_margin"] == margin
    # Dividing the rate by the margin can only lower a threshold.
    assert all(
        m.threshold <= p.threshold
        for m, p in zip(with_margin.verifier_bands, plain.verifier_bands, strict=True)
    )


def test_split_holds_out_domains_and_questions() -> None:
    traces = load_traces([TRACES])
    split = split_traces(traces)
    assert {t.domain for t in split.test} == {"general_reasoning", "medical"}
    assert not {t.domain for t in split.train} & {"general_reasoning", "medical"}
    assert not {t.question for t in split.train} & {t.question for t in split.validation}
    assert not {t.id for t in split.train} & {t.id for t in split.validation}


def test_cli_rejects_bad_options_before_loading_anything(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from auditor.cli.science import app

    runner = CliRunner()
    base = ["eval", "--traces", str(TRACES), "--out", str(tmp_path)]
    result = runner.invoke(app, [*base, "--attacks", "nonsense"])
    assert result.exit_code != 0 and "unknown attacks" in result.output
    result = runner.invoke(app, [*base, "--ir", "0.5,abc"])
    assert result.exit_code != 0 and "comma-separated" in result.output
    result = runner.invoke(app, [*base, "--lodo", "--heads", str(tmp_path / "h.pt")])
    assert result.exit_code != 0 and "--lodo trains its own" in result.output
    result = runner.invoke(app, [*base, "--rounds", "0"])
    assert result.exit_code != 0 and "at least 1" in result.output
    result = runner.invoke(app, ["train-heads", "--block-size", "8", "--out", str(tmp_path / "h.pt")])
    assert result.exit_code != 0 and "16..1024" in result.output
    result = runner.invoke(app, ["train-heads", "--attacks", "overclaim", "--out", str(tmp_path / "h.pt")])
    assert result.exit_code != 0 and "attacks: some of" in result.output
    assert not (tmp_path / "h.pt").exists()
