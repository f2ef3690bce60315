"""What one audit contributes to a provider's monitoring: whether a proof failed, and one score.

The verifier reports the smallest p-value of any revealed block under either of its two scores (the
block model's and the outlier score), and decides against a threshold per band of planned blocks: a
long trace shows more blocks, so more chances for one odd honest block. The monitor needs one scale
for audits of every length, so its score is that figure Bonferroni-adjusted over every test the
audit's exposure plan allows — two per planned block:

    S = min(1, 2 · planned blocks · smallest block p-value),

a p-value for the whole audit whatever its length (exact if the block p-values were). S is pulled
down to 0 when the evidence is stronger than any p-value can say: a proof failed (`fail`), or a
statistical check other than the verifier flagged (duplicate blocks, re-tokenization: each a
calibrated test of its own). An audit in which the verifier did not run and nothing failed or flagged
(an auditor that could not verify) would score 1, but carries no evidence (`carries_evidence`): the
service does not count it, since counting it would dilute the provider's evidence with audits the
auditor could not read. Small is suspicious; the monitor reads S
only through "S < t" for a few thresholds t, whose honest rates are measured per domain
(`auditor.monitoring.bounds`): S is *not* assumed uniform under the null, because on an unseen domain
it is not.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

VERIFIER = "verifier"
# The verifier's scores per block (the block model's and the outlier score): tests per planned block.
TESTS_PER_BLOCK = 2


@dataclass(frozen=True)
class AuditEvidence:
    """The part of an audit the monitor reads: the verdict's `outcome`, the verifier check's `figure`
    (the smallest block p-value; None when the semantic checks did not run), the number of blocks the
    audit's exposure plan allows (`ExposurePolicy.block_budget`, which the service stores with the
    audit) and the statistical checks that flagged."""

    verdict: str  # pass | suspect | fail | inconclusive
    verifier_p_value: float | None
    planned_blocks: int
    flagged_checks: tuple[str, ...] = ()

    @classmethod
    def from_verdict(cls, statement: Mapping[str, Any], planned_blocks: int) -> "AuditEvidence":
        """From a signed verdict's statement (docs/protocol.md, "Verdicts") and the audit's plan."""
        evidence = statement["evidence"]
        p_value = next((c["figure"] for c in evidence["checks"] if c["name"] == VERIFIER), None)
        return cls(statement["outcome"], p_value, planned_blocks, tuple(evidence["statistical_flags"]))

    @property
    def carries_evidence(self) -> bool:
        """Whether the audit says anything about the trace: a proof failed, a check flagged, or the
        verifier gave its figure."""
        return self.proof_failure or bool(self.flagged_checks) or self.verifier_p_value is not None

    @property
    def proof_failure(self) -> bool:
        """A proof check failed: it cannot fire on honest text, so one is enough to alarm."""
        return self.verdict == "fail"

    def score(self) -> float:
        """S in [0, 1], small = suspicious (see the module docstring)."""
        if self.proof_failure or any(name != VERIFIER for name in self.flagged_checks):
            return 0.0
        if self.verifier_p_value is None:
            return 1.0
        tests = TESTS_PER_BLOCK * max(1, self.planned_blocks)
        return min(1.0, max(0.0, tests * self.verifier_p_value))
