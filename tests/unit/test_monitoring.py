"""Provider monitoring (`auditor.monitoring`): the e-process keeps its false-alarm rate under the
composite null however long it runs, alarms fast under strong alternatives and at the first proof
failure; the null is leave-one-out; the inflated-share interval covers; `coin monitor-eval` runs."""

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from auditor.cli import build_app
from auditor.monitoring import (
    AuditEvidence,
    FoldRates,
    MonitorPolicy,
    MonitorState,
    NullBound,
    composite_null,
    detection_reference,
)
from auditor.monitoring.bounds import wilson_upper
from auditor.monitoring.eprocess import log_e_values
from auditor.monitoring.estimate import inflated_reports_lower, point_estimate, token_share_lower
from auditor.protocol.commitment import DEFAULT_BLOCK_SIZE
from auditor.research.evaluation.run import AuditOutcome
from auditor.research.evaluation.summary import wilson
from auditor.research.monitor_eval import planned_blocks
from auditor.research.monitor_report import rerender_monitor_report
from auditor.semantic.exposure import ExposurePolicy, plan_exposure

THRESHOLDS = (0.006, 0.05, 0.25)
BOUND = NullBound(THRESHOLDS, (0.03, 0.08, 0.3), ("a", "b"))


def _alarm_rate(flags: np.ndarray, nulls: tuple[float, ...], alpha: float) -> float:
    """Share of streams (providers x audits x thresholds of 0/1) whose e-process ever reaches 1/alpha."""
    counts = np.cumsum(flags, axis=1)
    n = np.arange(1, flags.shape[1] + 1)
    log_e = log_e_values(n, counts, nulls)
    return float(np.mean((log_e >= -math.log(alpha)).any(axis=1)))


def _nested_flags(
    rng: np.random.Generator, providers: int, audits: int, rates: tuple[float, ...]
) -> np.ndarray:
    """Scores whose CDF at each threshold is exactly `rates` (the worst case the null allows), as
    flags below every threshold."""
    u = rng.random((providers, audits))
    return u[..., None] < np.asarray(rates)


# --- the per-audit score ------------------------------------------------------------------------------


def test_score_is_the_audits_bonferroni_p_value_pulled_to_zero_by_proofs_and_other_flags() -> None:
    assert AuditEvidence("pass", 0.01, 10).score() == pytest.approx(0.2)  # two tests per planned block
    assert AuditEvidence("pass", 0.4, 10).score() == 1.0
    assert AuditEvidence("suspect", 1e-5, 3, ("verifier",)).score() == pytest.approx(6e-5)
    assert AuditEvidence("suspect", 0.7, 3, ("retokenization",)).score() == 0.0
    assert AuditEvidence("fail", None, 3).score() == 0.0 and AuditEvidence("fail", None, 3).proof_failure
    assert AuditEvidence("inconclusive", None, 3).score() == 1.0


def test_evidence_reads_a_signed_verdicts_statement() -> None:
    check = {"kind": "statistical", "threshold": 0.006, "detail": "…"}
    statement = {
        "version": "coin-verdict/2",
        "outcome": "suspect",
        "evidence": {
            "checks": [
                {**check, "name": "duplicate_blocks", "outcome": "pass", "figure": 0.93},
                {**check, "name": "verifier", "outcome": "suspect", "figure": 0.002},
            ],
            "proof_failures": [],
            "statistical_flags": ["verifier"],
        },
    }
    assert AuditEvidence.from_verdict(statement, 12) == AuditEvidence("suspect", 0.002, 12, ("verifier",))
    structural = {
        "outcome": "fail",
        "evidence": {"checks": [], "proof_failures": ["proof"], "statistical_flags": []},
    }
    assert AuditEvidence.from_verdict(structural, 12) == AuditEvidence("fail", None, 12)


# --- the composite null -------------------------------------------------------------------------------


def test_wilson_upper_is_the_evaluations_interval() -> None:
    for k, n in ((0, 50), (3, 198), (121, 2712), (50, 50)):
        assert wilson_upper(k, n) == pytest.approx(wilson(k, n)[1])


def _folds() -> list[FoldRates]:
    return [
        FoldRates("general_reasoning", THRESHOLDS, 547, (8, 10, 83), 100, (60, 70, 90), 50.0),
        FoldRates("math", THRESHOLDS, 2712, (121, 280, 650), 100, (40, 50, 70), 100.0),
        FoldRates("medical", THRESHOLDS, 198, (0, 12, 40), 50, (20, 25, 30), 25.0),
    ]


def test_composite_null_is_the_worst_other_fold_and_at_least_the_threshold() -> None:
    folds = _folds()
    bound = composite_null(folds, exclude="math")
    assert bound.domains == ("general_reasoning", "medical")
    expected = [
        max(t, wilson_upper(folds[0].honest_flags[j], 547), wilson_upper(folds[2].honest_flags[j], 198))
        for j, t in enumerate(THRESHOLDS)
    ]
    assert bound.rates == pytest.approx(expected)
    # Leaving out the worst fold lowers the bound: the held-out domain is not used for its own null.
    everything = composite_null(folds)
    assert all(a <= b for a, b in zip(bound.rates, everything.rates, strict=True))
    assert everything.rates[0] == pytest.approx(wilson_upper(121, 2712))
    assert composite_null(folds, exclude="general_reasoning").rates[0] == pytest.approx(
        wilson_upper(121, 2712)
    )


def test_composite_null_refuses_what_it_cannot_bound() -> None:
    with pytest.raises(ValueError, match="no fold left"):
        composite_null(_folds()[:1], exclude="general_reasoning")
    odd = FoldRates("odd", (0.01, 0.1, 0.5), 10, (0, 0, 1))
    with pytest.raises(ValueError, match="different thresholds"):
        composite_null([*_folds(), odd])
    with pytest.raises(ValueError, match="increasing"):
        FoldRates.from_scores("x", (0.5, 0.1), [0.2])
    with pytest.raises(ValueError, match="threshold"):
        NullBound(THRESHOLDS, (0.001, 0.1, 0.3), ())


def test_detection_reference_pools_the_other_folds() -> None:
    reference = detection_reference(_folds(), exclude="medical")
    assert reference.honest_rates[0] == pytest.approx((8 + 121) / (547 + 2712))
    assert reference.inflated_rates[2] == pytest.approx((90 + 70) / 200)
    assert reference.inflation_ratio == pytest.approx(150 / 200)


# --- the e-process ------------------------------------------------------------------------------------


def test_e_process_keeps_its_false_alarm_rate_under_the_null_over_a_long_horizon() -> None:
    """Scores at the edge of the composite null (every rate exactly r_j): the chance that an honest
    provider ever alarms within 3,000 audits stays under alpha (Ville), within Monte-Carlo error."""
    rng = np.random.default_rng(1)
    alpha, providers = 0.05, 1200
    rates = []
    for _ in range(providers // 200):
        flags = _nested_flags(rng, 200, 3000, BOUND.rates)
        rates.append(_alarm_rate(flags, BOUND.rates, alpha))
    observed = float(np.mean(rates))
    assert observed <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / providers)


def test_e_values_have_mean_at_most_one_under_the_null() -> None:
    """The supermartingale property itself: at every fixed n, E[E_n] <= 1 at the edge of the null."""
    rng = np.random.default_rng(5)
    flags = np.cumsum(_nested_flags(rng, 20_000, 200, BOUND.rates), axis=1)
    for n in (1, 10, 50, 200):
        e = np.exp(log_e_values(n, flags[:, n - 1], BOUND.rates))
        assert e.mean() <= 1 + 4 * e.std() / math.sqrt(len(e))


def test_e_process_is_valid_when_the_honest_rate_moves_below_the_bound() -> None:
    """A provider whose rate changes with its traffic (here: 0 then r, block by block) is still under
    the conditional null; so is one far below it."""
    rng = np.random.default_rng(2)
    r = (0.05,)
    moving = np.zeros((400, 2000, 1), dtype=bool)
    for start in range(0, 2000, 200):
        if start // 200 % 2:
            moving[:, start : start + 200, 0] = rng.random((400, 200)) < r[0]
    assert _alarm_rate(moving, r, 0.05) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 400)
    assert _alarm_rate(rng.random((400, 2000, 1)) < 0.01, r, 0.05) == 0.0


def test_e_process_alarms_fast_under_a_strong_alternative() -> None:
    rng = np.random.default_rng(3)
    flags = _nested_flags(rng, 200, 60, (0.4, 0.6, 0.8))  # an attack against BOUND's (0.03, 0.08, 0.3)
    counts = np.cumsum(flags, axis=1)
    log_e = log_e_values(np.arange(1, 61), counts, BOUND.rates)
    first = np.argmax(log_e >= -math.log(0.01), axis=1) + 1
    assert (log_e >= -math.log(0.01)).any(axis=1).all()
    assert np.median(first) <= 10


def test_e_values_depend_on_the_null_monotonically() -> None:
    """A higher null rate never gives more evidence: what the interval's bisection relies on."""
    nulls = np.linspace(0.001, 0.999, 200)
    values = log_e_values(np.full(200, 100), np.full((200, 1), 30), nulls[:, None])
    assert np.all(np.diff(values) <= 1e-12)
    assert log_e_values(5, (0,), (0.0,)) < 0 and log_e_values(5, (1,), (0.0,)) == math.inf


# --- the monitor state --------------------------------------------------------------------------------


def _policy() -> MonitorPolicy:
    return MonitorPolicy(BOUND, reference=detection_reference(_folds(), exclude="math"))


def test_state_matches_the_vectorised_e_process_and_alarms_statistically() -> None:
    state = MonitorState.start("2026-11", _policy())
    for k in range(40):
        state = state.update(AuditEvidence("suspect" if k % 2 else "pass", 1e-4 if k % 2 else 0.6, 10))
    assert state.audits == 40 and state.flags == (20, 20, 20) and state.proof_failures == 0
    assert state.log_e == pytest.approx(float(log_e_values(40, (20, 20, 20), BOUND.rates)))
    assert state.alarm == "statistical" and state.alarm_at is not None and state.alarm_at < 40
    assert state.max_log_e >= -math.log(0.01) and state.anytime_p_value <= 0.01


def test_a_proof_failure_alarms_at_once_and_the_alarm_stays() -> None:
    state = MonitorState.start("2026-11", _policy())
    for _ in range(5):
        state = state.update(AuditEvidence("pass", 1.0, 10))
    assert state.alarm is None and state.anytime_p_value == 1.0
    state = state.update(AuditEvidence("fail", None, 10))
    assert (state.alarm, state.alarm_at, state.proof_failures) == ("proof", 6, 1)
    for _ in range(50):
        state = state.update(AuditEvidence("pass", 1.0, 10))
    assert (state.alarm, state.alarm_at) == ("proof", 6)


def test_state_resets_per_period() -> None:
    policy = _policy()
    state = MonitorState.for_period(None, "2026-11", policy).update(AuditEvidence("fail", None, 10))
    assert MonitorState.for_period(state, "2026-11", policy) is state
    fresh = MonitorState.for_period(state, "2026-12", policy)
    assert (fresh.period, fresh.audits, fresh.flags, fresh.alarm, fresh.max_log_e) == (
        "2026-12", 0, (0, 0, 0), None, 0.0
    )  # fmt: skip


def test_state_round_trips_through_json() -> None:
    state = MonitorState.start("2026-11", _policy())
    for p in (0.5, 1e-4, None, 0.01):
        state = state.update(AuditEvidence("pass" if p is None or p > 1e-4 else "suspect", p, 10))
    state = state.update(AuditEvidence("fail", None, 10))
    text = json.dumps(state.to_json())
    assert len(text) < 1500
    assert MonitorState.from_json(json.loads(text)) == state
    bare = MonitorState.start("p", MonitorPolicy(BOUND))
    assert MonitorState.from_json(json.loads(json.dumps(bare.to_json()))) == bare
    with pytest.raises(ValueError):
        MonitorState.from_json({**state.to_json(), "alarm": "maybe"})


# --- the inflated share -------------------------------------------------------------------------------


def _provider_counts(
    rng: np.random.Generator,
    providers: int,
    audits: int,
    share: float,
    honest_rates: tuple[float, ...],
    inflated_rates: tuple[float, ...],
    fail_rate: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    inflated = rng.random((providers, audits)) < share
    fails = inflated & (rng.random((providers, audits)) < fail_rate)
    u = rng.random((providers, audits))[..., None]
    rates = np.where(inflated[..., None], np.asarray(inflated_rates), np.asarray(honest_rates))
    flags = fails[..., None] | (u < rates)
    return np.full(providers, audits), fails.sum(axis=1), flags.sum(axis=1)


@pytest.mark.parametrize(
    ("share", "inflated_rates", "fail_rate"),
    [
        (0.0, (0.0, 0.0, 0.0), 0.0),  # honest, at the edge of the null
        (0.3, (0.03, 0.08, 0.3), 0.0),  # undetectable: looks exactly like the null
        (0.3, (0.3, 0.6, 0.9), 0.0),  # detectable
        (1.0, (0.5, 0.7, 0.9), 0.2),  # strongly detectable with some proofs
        (0.5, (1.0, 1.0, 1.0), 1.0),  # structural: every inflated report fails
    ],
)
def test_inflated_share_interval_covers(
    share: float, inflated_rates: tuple[float, ...], fail_rate: float
) -> None:
    rng = np.random.default_rng(4)
    for audits in (20, 300):
        n, fails, flags = _provider_counts(rng, 600, audits, share, BOUND.rates, inflated_rates, fail_rate)
        lower = inflated_reports_lower(n, fails, flags, BOUND)
        assert np.mean(lower <= share) >= 0.95
        # The token share with every inflated report at the floor ratio: the interval still holds it.
        ratio = 0.05
        truth = share * ratio / (1 + share * ratio)
        assert np.mean(token_share_lower(lower, ratio) <= truth) >= 0.95


def test_inflated_share_lower_bound_is_informative_under_proofs() -> None:
    lower = inflated_reports_lower(500, 500, (500, 500, 500), BOUND)
    assert 0.95 < float(lower) < 1.0
    assert float(inflated_reports_lower(500, 0, (0, 0, 0), BOUND)) == 0.0
    estimate = MonitorState(
        "p", _policy(), audits=500, proof_failures=100, flags=(100, 100, 100)
    ).estimate()  # fmt: skip
    assert estimate.token_share_interval[1] == 1.0
    assert 0 < estimate.token_share_interval[0] < estimate.inflated_reports_lower < 0.2


def test_point_estimate_inverts_the_assumed_mixture() -> None:
    reference = detection_reference(_folds())
    pi = 0.4
    q = [(1 - pi) * h + pi * d for h, d in zip(reference.honest_rates, reference.inflated_rates, strict=True)]
    estimated, share = point_estimate(10_000, np.asarray(q) * 10_000, reference)
    assert float(estimated) == pytest.approx(pi)
    rho = reference.inflation_ratio
    assert float(share) == pytest.approx(pi * rho / (1 + pi * rho))


# --- coin monitor-eval --------------------------------------------------------------------------------

runner = CliRunner()
app = build_app()


def _outcome(
    domain: str, attack: str, ir: float, verdict: str, p: float | None, flagged: Sequence[str] = ()
) -> dict[str, Any]:
    return {
        "trace_id": f"{domain}-{attack}", "domain": domain, "model_family": "r1-distill",
        "genuine_tokens": 600, "attack": attack, "requested_ir": ir, "ir": ir, "verdict": verdict,
        "failed_checks": ("proof",) if verdict == "fail" else (), "flagged_checks": tuple(flagged),
        "verifier_p_value": p, "rounds": 1, "block_exposure": 0.25, "token_visibility": 0.02,
        "reachable": None, "token_reachable": None,
    }  # fmt: skip


def _write_fold(root: Path, domain: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = [_outcome(domain, "honest", 0.0, "pass", float(p)) for p in rng.uniform(0.01, 1, 120)]
    rows += [_outcome(domain, "honest", 0.0, "suspect", 0.001, ("verifier",)) for _ in range(2)]
    for ir in (0.25, 0.5):
        rows += [_outcome(domain, "random_tokens", ir, "suspect", 0.0001, ("verifier",)) for _ in range(8)]
        rows += [_outcome(domain, "random_tokens", ir, "pass", float(p)) for p in rng.uniform(0, 1, 2)]
        rows += [_outcome(domain, "overclaim", ir, "fail", None) for _ in range(10)]
    folder = root / f"fold-{domain}"
    folder.mkdir(parents=True)
    # A field the reader does not know (a newer evaluation's) is ignored.
    (folder / "outcomes.jsonl").write_text("".join(json.dumps({**r, "unknown": 1}) + "\n" for r in rows))


@pytest.mark.parametrize(("genuine", "ir"), [(600, 0.0), (600, 0.5), (37, 0.1), (4000, 1.0)])
def test_monitor_eval_plans_as_the_evaluation_did(genuine: int, ir: float) -> None:
    """The score's Bonferroni factor needs the blocks the audit's plan allowed: rebuilt from the
    outcome, they are what the planner draws for the claimed size."""
    outcome = AuditOutcome(**{**_outcome("math", "markov", ir, "pass", 0.5), "genuine_tokens": genuine})
    claimed = round(genuine * (1 + ir))
    plan = plan_exposure(claimed, DEFAULT_BLOCK_SIZE, ExposurePolicy(), random.Random(0))
    assert planned_blocks(outcome) == len(plan.blocks)


def test_monitor_eval_runs_on_a_small_lodo_folder(tmp_path: Path) -> None:
    for k, domain in enumerate(("general_reasoning", "math", "medical")):
        _write_fold(tmp_path / "lodo", domain, k)
    (tmp_path / "lodo" / "fold-process_mining").mkdir()  # still being written: no outcomes yet
    result = runner.invoke(
        app,
        ["monitor-eval", "--lodo-dir", str(tmp_path / "lodo"), "--out", str(tmp_path / "out"),
         "--honest-providers", "40", "--providers", "20", "--horizon", "100", "--ir", "0.25,0.5",
         "--share", "0.3,1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    headline = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(headline) == {
        "domains", "honest_false_alarm_rate", "median_audits_to_alarm", "interval_coverage_min"
    }  # fmt: skip
    # Every fold present is judged (the worst of them), not a chosen subset.
    assert headline["domains"] == ["general_reasoning", "math", "medical"]
    assert headline["median_audits_to_alarm"]["random_tokens"] <= 10
    assert headline["interval_coverage_min"] >= 0.95
    report = json.loads((tmp_path / "out" / "monitor.json").read_text())
    assert set(report["folds"]) == {"general_reasoning", "math", "medical"}
    assert report["folds"]["medical"]["bound"]["domains"] == ["general_reasoning", "math"]
    assert set(report["transfer"]) == set(report["folds"]) and len(report["transfer"]["math"]["bound"]) == 4
    overclaim = [c for c in report["folds"]["math"]["cells"] if c["attack"] == "overclaim"]
    assert all(c["alarm_by_first_fail"] == 1.0 for c in overclaim)
    assert MonitorPolicy.from_json(report["calibration"]).bound.domains == (
        "general_reasoning", "math", "medical"
    )  # fmt: skip
    shipped = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert MonitorPolicy.from_json(shipped) == MonitorPolicy.from_json(report["calibration"])
    for name in ("monitor.md", "monitor_alarm.png", "monitor_interval.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert report["targets"]["domains"] == ["general_reasoning", "math", "medical"]
    # Re-rendered from monitor.json alone: the same targets and headline, derived again from the folds.
    again = rerender_monitor_report(tmp_path / "out", log=lambda _: None)
    assert again["headline"] == headline and again["targets"] == report["targets"]
    assert (
        "rerendered" in again and "## Targets (every fold:" in (tmp_path / "out" / "monitor.md").read_text()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alpha", "1.5"], "alpha"),
        (["--share", "0.3,1.5"], "share"),
        (["--ir", "x"], "ir"),
        (["--horizon", "0"], "horizon"),
        (["--lodo-dir", "/nonexistent/lodo"], "lodo-dir"),
    ],
)
def test_monitor_eval_rejects_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["monitor-eval", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_monitor_eval_needs_two_folds(tmp_path: Path) -> None:
    _write_fold(tmp_path / "lodo", "general_reasoning", 0)
    result = runner.invoke(
        app, ["monitor-eval", "--lodo-dir", str(tmp_path / "lodo"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "at least two" in result.output
