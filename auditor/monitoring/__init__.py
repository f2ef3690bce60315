"""Provider-level monitoring: many weak audits add up to evidence about one provider (pure statistics;
the service keeps the state, draws the audits and acts on alarms).

One audit rarely convicts a provider of plausible-looking inflation: at a ~1% false-positive rate a
revealed 16-token block says little. But an inflating provider inflates many reports. Per provider and
period the monitor keeps a few counts (`MonitorState`) and, after every audit:

- alarms at the first proof failure, or when a betting e-process against a *composite* null — the worst
  honest rate measured across held-out domains (`bounds`) — reaches 1/α; anytime-valid by Ville's
  inequality (`eprocess`);
- bounds the share of inflated reports from below with a confidence sequence, and the inflated share of
  billed tokens with an interval whose upper end is 1, because undetectable inflation cannot be ruled
  out (`estimate`, which says what is and is not identifiable).

`coin monitor-eval` (`auditor.research.monitor_eval`) measures all of it by simulation on the
leave-one-domain-out outcomes.
"""

from auditor.monitoring.bounds import (
    THRESHOLDS,
    DetectionReference,
    FoldRates,
    NullBound,
    composite_null,
    detection_reference,
)
from auditor.monitoring.evidence import AuditEvidence
from auditor.monitoring.monitor import InflationEstimate, MonitorPolicy, MonitorState

__all__ = [
    "THRESHOLDS",
    "AuditEvidence",
    "DetectionReference",
    "FoldRates",
    "InflationEstimate",
    "MonitorPolicy",
    "MonitorState",
    "NullBound",
    "composite_null",
    "detection_reference",
]
