"""What the dashboard's templates are given: the Jinja2 environment with its filters, how each outcome
is shown, and the charts (plotly.js figures as JSON, drawn by `static/dashboard.js`).

`fail` and `suspect` are never shown alike: `fail` is proof (red, "proof of inflation"), `suspect`
statistical evidence (amber, "statistical evidence, not proof").
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from api.dashboard.session import CSRF_FIELD, CSRF_HEADER, Staff
from auditor.protocol.challenge import Challenge as ChallengeSpec
from service.models import Audit, AuditStatus, EscalationReason, Outcome, utcnow
from service.stats.repository import Activity

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class OutcomeStyle:
    label: str
    meaning: str
    colour: str  # the charts' colour; the CSS class `o-<outcome>` has the same


OUTCOMES = {
    Outcome.PASS: OutcomeStyle("pass", "every check held", "#1a7f37"),
    Outcome.SUSPECT: OutcomeStyle("suspect", "statistical evidence, not proof", "#b35900"),
    Outcome.FAIL: OutcomeStyle("fail", "proof of inflation", "#c21d2f"),
    Outcome.INCONCLUSIVE: OutcomeStyle("inconclusive", "no decision", "#6e7781"),
}
ESCALATION_REASONS = {
    EscalationReason.FAIL: "a failed audit",
    EscalationReason.ALARM: "a monitoring alarm",
    EscalationReason.EVIDENCE: "rising evidence (the e-value passed the warning level)",
}
CHECK_KINDS = {
    "proof": "proof: cannot fire on honest text; failing it is proof",
    "statistical": "statistical: a calibrated judgement with a known false-positive rate; flags, never proves",
}


def _number(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,}"


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days} d"] * bool(days) + [f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(minutes)
    return " ".join(parts[:2]) or f"{seconds} s"


def _time_left(deadline: datetime) -> str:
    left = (deadline - utcnow()).total_seconds()
    return f"in {_duration(left)}" if left > 0 else f"overdue by {_duration(left)}"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def _environment() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES)
    templates.env.filters.update(
        number=_number, figure=_figure, share=_share, when=_when, time_left=_time_left, pretty=_pretty
    )
    templates.env.globals.update(
        OUTCOMES=OUTCOMES,
        Outcome=Outcome,
        AuditStatus=AuditStatus,
        CHECK_KINDS=CHECK_KINDS,
        ESCALATION_REASONS=ESCALATION_REASONS,
        CSRF_FIELD=CSRF_FIELD,
        CSRF_HEADER=CSRF_HEADER,
    )
    return templates


templates = _environment()


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    staff: Staff | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """A page (or an htmx fragment) of the dashboard; `staff` for pages behind sign-in."""
    return templates.TemplateResponse(
        request,
        name,
        {**context, "staff": staff, "csrf": staff.csrf_token if staff else None},
        status_code=status_code,
    )


# --- charts ---------------------------------------------------------------------------------------

_LAYOUT: dict[str, Any] = {
    "margin": {"l": 48, "r": 16, "t": 8, "b": 40},
    "legend": {"orientation": "h", "y": -0.2},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "height": 280,
}


def _days(activity: Activity) -> list[str]:
    return [day.isoformat() for day in activity.days]


def _count_axis(*series: list[int]) -> dict[str, Any]:
    """A y axis for counts: whole numbers only, even when they are small."""
    axis: dict[str, Any] = {"rangemode": "tozero", "tickformat": ",d"}
    if max((max(values, default=0) for values in series), default=0) <= 5:
        axis["dtick"] = 1
    return axis


def volume_chart(activity: Activity, *, tokens: bool = False) -> dict[str, Any]:
    """Reports received and audits opened per day; with `tokens`, the reasoning tokens they billed."""
    days = _days(activity)
    data: list[dict[str, Any]] = [
        {"type": "bar", "name": "reports", "x": days, "y": activity.reports, "marker": {"color": "#3b6fb6"}},
        {
            "type": "bar",
            "name": "audits opened",
            "x": days,
            "y": activity.audits,
            "marker": {"color": "#8a63d2"},
        },
    ]
    layout = {**_LAYOUT, "barmode": "group", "yaxis": _count_axis(activity.reports, activity.audits)}
    if tokens:
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "billed reasoning tokens",
                "x": days,
                "y": activity.reasoning_tokens,
                "yaxis": "y2",
                "line": {"color": "#444"},
            }
        )
        layout["yaxis2"] = {"overlaying": "y", "side": "right", "rangemode": "tozero", "showgrid": False}
        layout["margin"] = {**_LAYOUT["margin"], "r": 56}
    return {"data": data, "layout": layout}


def outcomes_chart(activity: Activity) -> dict[str, Any]:
    """Verdicts per day, stacked by outcome (each outcome its own colour)."""
    days = _days(activity)
    data = [
        {
            "type": "bar",
            "name": f"{style.label} ({style.meaning})",
            "x": days,
            "y": activity.verdicts[outcome],
            "marker": {"color": style.colour},
        }
        for outcome, style in OUTCOMES.items()
    ]
    totals = [sum(day) for day in zip(*activity.verdicts.values(), strict=True)]
    return {"data": data, "layout": {**_LAYOUT, "barmode": "stack", "yaxis": _count_axis(totals)}}


@dataclass(frozen=True)
class BlockMap:
    """Which blocks of the trace an audit revealed, and in which round; the verifier's most unusual
    block when its check names one."""

    num_blocks: int
    block_size: int
    first_round: dict[int, int]  # block index -> the round that first revealed it
    worst_block: int | None

    @property
    def revealed(self) -> int:
        return len(self.first_round)


_WORST_BLOCK = re.compile(r"most unusual block (\d+)")


def block_map(audit: Audit) -> BlockMap | None:
    """None before the first challenge."""
    if not audit.challenges:
        return None
    first_round: dict[int, int] = {}
    spec = None
    for challenge in audit.challenges:  # by round; each round's blocks include the earlier rounds'
        spec = ChallengeSpec.from_json(challenge.body)
        for block in spec.block_indices:
            first_round.setdefault(block, challenge.round)
    assert spec is not None
    worst = None
    if audit.verdict is not None:
        for check in audit.verdict.statement.get("evidence", {}).get("checks", []):
            found = (
                _WORST_BLOCK.search(str(check.get("detail", ""))) if check.get("name") == "verifier" else None
            )
            worst = int(found.group(1)) if found else worst
    return BlockMap(spec.num_blocks, spec.block_size, first_round, worst)


_ROUND_COLOURS = ["#3b6fb6", "#8a63d2", "#2a9d8f", "#e9c46a", "#f4a261", "#264653"]


def block_map_chart(blocks: BlockMap) -> dict[str, Any]:
    """The revealed blocks over the trace's positions [0, num_blocks), coloured by round."""
    rounds = sorted(set(blocks.first_round.values()))
    data: list[dict[str, Any]] = [
        {
            "type": "bar",
            "name": f"revealed in round {r}",
            "x": sorted(b for b, first in blocks.first_round.items() if first == r),
            "y": [1] * sum(1 for first in blocks.first_round.values() if first == r),
            "width": 1,
            "marker": {"color": _ROUND_COLOURS[(r - 1) % len(_ROUND_COLOURS)]},
            "hovertemplate": f"block %{{x}} (tokens from %{{x}}×{blocks.block_size}), round {r}<extra></extra>",
        }
        for r in rounds
    ]
    if blocks.worst_block is not None:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "verifier's most unusual block",
                "x": [blocks.worst_block],
                "y": [1.15],
                "marker": {"symbol": "triangle-down", "size": 14, "color": "#c21d2f"},
            }
        )
    layout = {
        **_LAYOUT,
        "height": 200,
        "xaxis": {
            "title": {"text": "block index (trace position)"},
            "range": [-0.5, blocks.num_blocks - 0.5],
        },
        "yaxis": {"visible": False, "range": [0, 1.3]},
        "bargap": 0,
    }
    return {"data": data, "layout": layout}
