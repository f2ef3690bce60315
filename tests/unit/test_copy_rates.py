"""The copied_spans rule against every honest trace: none fails, and the rule's thresholds are where the
tail fit puts them — a fit that, made on three domains, fails no honest trace of the fourth; and a
domain's own rule, raised by its reference traces where they copy more."""

import math
from typing import Any

import numpy as np
import pytest

from auditor.protocol.copies import COPY_RULE, CopyFigures, rule_for_references, tail_threshold
from auditor.protocol.tokenize import DEFAULT_TOKENIZER_ID, get_tokenizer
from auditor.research.copy_rates import (
    TraceCopies,
    constants_sensitivity,
    fitted_rule,
    fold_copy_rule,
    leave_one_domain_out,
    measure,
    rewriting_domain,
)
from auditor.research.traces import load_traces
from tests.conftest import TRACES_DIR


def test_tail_threshold_finds_an_exponential_laws_quantile() -> None:
    scale = 0.02
    values = np.random.default_rng(0).exponential(scale, size=200_000)
    # P(X > t) = exp(-t / scale) = 1e-4 at t = scale * ln(10^4), beyond every value but ~20 of the sample.
    assert tail_threshold(values, rate=1e-4) == pytest.approx(scale * math.log(1e4), rel=0.05)
    assert tail_threshold(values, rate=1e-3) == pytest.approx(scale * math.log(1e3), rel=0.05)


def test_tail_threshold_refuses_a_sample_without_a_tail() -> None:
    with pytest.raises(ValueError, match="fewer than 2"):
        tail_threshold([0.1] * 150)


@pytest.fixture(scope="module")
def honest() -> dict[str, Any]:
    traces = load_traces([TRACES_DIR])
    tokenizer = get_tokenizer(DEFAULT_TOKENIZER_ID)
    return measure(traces, lambda trace: tokenizer.tokenize(trace.reasoning))


def test_no_honest_trace_fails_copied_spans(honest: dict[str, Any]) -> None:
    assert honest["overall"]["traces"] >= 5000
    assert honest["overall"]["fails"] == 0, honest["failed"][:10]
    assert honest["failed"] == []


def test_the_rule_is_the_tail_fit_rounded_up(honest: dict[str, Any]) -> None:
    # The shipped thresholds (24% and 60%) are the fit on all traces (23.4% and 58.8%) rounded up.
    fitted = honest["fitted_rule"]
    assert fitted["copied"] <= COPY_RULE.copied < fitted["copied"] + 0.02
    assert fitted["repeated"] <= COPY_RULE.repeated < fitted["repeated"] + 0.02


def test_the_fit_on_three_domains_fails_no_honest_trace_of_the_fourth(honest: dict[str, Any]) -> None:
    folds = honest["leave_one_domain_out"]
    assert len(folds) >= 4
    for fold in folds:
        assert fold["fails"] == 0, fold
        assert fold["margin"] > 1, fold


def test_leave_one_domain_out_counts_the_held_out_traces_above_the_others_fit() -> None:
    # One domain's masses sit far above the others': held out, it fails against the others' fit.
    rng = np.random.default_rng(1)
    rows = [
        TraceCopies(f"{d}{k}", d, "m", "< 500", CopyFigures(1000, int(c * 1000), 0, 1, 20), False)
        for d, scale in (("a", 0.01), ("b", 0.01), ("c", 0.05))
        for k, c in enumerate(rng.exponential(scale, size=400))
    ]
    folds = {fold["domain"]: fold for fold in leave_one_domain_out(rows)}
    assert folds["a"]["fails"] == 0 and folds["b"]["fails"] == 0
    # Above a's and b's fit, ~0.01 ln(10^4) = 0.092, lie exp(-0.092 / 0.05) = 16% of c's traces.
    assert 30 < folds["c"]["fails"] < 100 and folds["c"]["margin"] < 1
    assert (
        folds["a"]["rule"]["copied"] > 2 * folds["c"]["rule"]["copied"]
    )  # c's tail lifts every fit it is in
    assert fitted_rule(rows).copied > folds["c"]["rule"]["copied"]


def test_a_lodo_folds_copy_rule_is_the_benchs_held_out_fit() -> None:
    """The evaluation's fold rule (`fold_copy_rule`) is the rule `leave_one_domain_out` fits for that
    fold: the other domains' honest traces only, unrounded, the shipped floor."""
    traces = load_traces([TRACES_DIR / "thinkingllms_general_r1distill.jsonl"])
    traces += load_traces([TRACES_DIR / "huatuogpt_o1_medical_gpt4o_cot.jsonl"])
    traces += load_traces([TRACES_DIR / "thinkingllms_math_r1distill_qwq.jsonl"])[:300]  # 200+ per fit
    tokenizer = get_tokenizer(DEFAULT_TOKENIZER_ID)
    rows = measure(traces, lambda trace: tokenizer.tokenize(trace.reasoning))
    bench = {fold["domain"]: fold["rule"] for fold in rows["leave_one_domain_out"]}
    rule = fold_copy_rule(traces, "medical", lambda trace: tokenizer.tokenize(trace.reasoning))
    assert (rule.copied, rule.repeated, rule.min_tokens) == (
        bench["medical"]["copied"], bench["medical"]["repeated"], COPY_RULE.min_tokens
    )  # fmt: skip
    assert rule.label == "without-medical"
    # The sensitivity of that held-out result to the rule's constants: at the shipped ones, the same.
    shipped = constants_sensitivity(
        traces, lambda trace: tokenizer.tokenize(trace.reasoning), rates=(1e-4,), min_spans=(10,)
    )
    held = {fold["domain"]: fold for fold in rows["leave_one_domain_out"]}
    assert shipped[0]["held_out_fails"] == {d: fold["fails"] for d, fold in held.items()}
    assert shipped[0]["margin"] == pytest.approx(min(fold["margin"] for fold in held.values()))


def _figures(copied: float, repeated: float = 0.0, size: int = 1000) -> CopyFigures:
    return CopyFigures(size, round(copied * size), round(repeated * size), 1, 20)


def test_a_domain_rule_is_never_below_the_shipped_one() -> None:
    references = [_figures(c) for c in np.random.default_rng(2).exponential(0.01, size=300)]
    rule = rule_for_references(references, label="medical@1")
    assert (rule.copied, rule.repeated, rule.min_tokens) == (COPY_RULE.copied, COPY_RULE.repeated, 32)
    assert rule.label == "medical@1" and COPY_RULE.label == "shipped"


def test_a_domain_rule_rises_above_its_references_copied_mass() -> None:
    # A domain whose models write their answer out twice: copied masses around 35-45%.
    masses = np.random.default_rng(3).uniform(0.35, 0.45, size=60)
    references = [_figures(c, repeated=0.2) for c in masses]
    shipped_fails = sum(r.proves_copying(COPY_RULE) for r in references)
    rule = rule_for_references(references, label="code@1")
    assert shipped_fails == 60
    assert not any(r.proves_copying(rule) for r in references)
    assert rule.copied >= masses.max() and rule.repeated == COPY_RULE.repeated
    assert rule.copied * 100 == pytest.approx(round(rule.copied * 100))  # a whole percent


def test_fewer_references_than_a_tail_needs_keep_the_shipped_rule_or_refuse() -> None:
    # 49 references cannot bound a tail: the shipped rule, unless one of them fails it.
    rule = rule_for_references([_figures(0.20)] * 49, label="x@1")
    assert (rule.copied, rule.repeated, rule.label) == (COPY_RULE.copied, COPY_RULE.repeated, "x@1")
    with pytest.raises(ValueError, match="1 of 49 reference traces fail the shipped copy rule"):
        rule_for_references([_figures(0.20)] * 48 + [_figures(0.30)], label="x@1")
    # Fifty are enough: the tail of all fifty (edge at the smallest, 20%), to one trace in 10,000.
    rule = rule_for_references([_figures(0.20)] * 49 + [_figures(0.30)], label="x@1")
    excess = 0.10  # the mean excess over the edge, of the one mass above it
    assert rule.copied == pytest.approx(math.ceil(100 * (0.20 + excess * math.log(1 / 1e-4))) / 100)


def test_a_rewriting_domains_rule_from_half_its_traces_covers_the_other_half() -> None:
    # A domain the shipped rule was not fitted to: 400 real traces whose model writes its last half out
    # again (copied mass ~33%). The rule from either half as references fails none of them, and at most
    # one of the other half (measured: 0 and 0; 1 and 0 with traces chosen by length in characters — an
    # honest trace already heavy in repeated mass, 61%, beyond any of its references: 200 references
    # cannot promise the shipped rule's one honest fail in 10,000); the shipped rule fails most of them.
    splits = rewriting_domain(load_traces([TRACES_DIR]), get_tokenizer(DEFAULT_TOKENIZER_ID).tokenize)
    for split in splits:
        assert (split["references"], split["held_out"], split["reference_fails"]) == (200, 200, 0)
        assert split["held_out_fails_shipped"] > 150
        assert split["held_out_fails"] <= 1
        assert split["rule"]["copied"] < 0.5  # still a bound: a trace pasting all of itself again fails
