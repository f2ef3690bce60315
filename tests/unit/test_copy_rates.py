"""The copied_spans rule against every honest trace: none fails, and the rule's thresholds are where the
tail fit puts them — a fit that, made on three domains, fails no honest trace of the fourth."""

import math
from typing import Any

import numpy as np
import pytest

from auditor.protocol.copies import COPY_RULE, CopyFigures
from auditor.protocol.tokenize import DEFAULT_TOKENIZER_ID, get_tokenizer
from auditor.research.copy_rates import (
    TraceCopies,
    fitted_rule,
    leave_one_domain_out,
    measure,
    tail_threshold,
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
