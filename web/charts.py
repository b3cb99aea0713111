"""Geometry of the dashboard's charts: inline SVG drawn on the server (the CSP allows no script, and the
page loads nothing from elsewhere).

Each cycle gets its own small chart on its own scale: a bar per funnel step, as a share of that cycle's
audience (shared.cycle_breakdown), so a cycle of 3 beside one of 50,000 is as readable as the big one. A step
that happened at all is never thinner than `MIN_VISIBLE`; the exact count is in the bar's label and title.
"""

from __future__ import annotations

from typing import Any

#: Pixels for 100 % of a cycle's audience; room above for the counts.
PLOT_HEIGHT, LABEL_ROOM = 100, 14
BAR_WIDTH, BAR_GAP = 26, 6
MIN_VISIBLE = 2


def funnel_chart(report: dict[str, Any]) -> dict[str, Any]:
    """Bars for one cycle's chart: one per funnel step, in order."""
    funnel = report["funnel"]
    audience = funnel["audience"]
    counts = [step["count"] for step in funnel["steps"]]
    # Retries can place more calls than contacts, and a cycle without items may still have sends: the bars
    # never outgrow the chart.
    scale = max(audience, *counts, 1)
    bars = []
    for i, step in enumerate(funnel["steps"]):
        count = step["count"]
        height = max(MIN_VISIBLE, round(PLOT_HEIGHT * count / scale, 1)) if count else 0
        y = LABEL_ROOM + PLOT_HEIGHT - height
        bars.append({
            "step": i, "x": BAR_GAP / 2 + i * (BAR_WIDTH + BAR_GAP), "y": y, "height": height,
            "label": compact(count), "label_y": y - 3, "title": bar_title(report["id"], step, audience),
        })  # fmt: skip
    return {
        "cycle_id": report["id"],
        "audience": audience,
        "bars": bars,
        "bar_width": BAR_WIDTH,
        "width": len(bars) * (BAR_WIDTH + BAR_GAP),
        "height": LABEL_ROOM + PLOT_HEIGHT,
        "top": LABEL_ROOM,
    }


def bar_title(cycle_id: int, step: dict[str, Any], audience: int) -> str:
    share = step["percent_of_audience"]
    of = f"{share}% of its {audience} contacts" if share is not None else "no contacts planned"
    return f"cycle {cycle_id}: {step['label']} {step['count']} ({of})"


def compact(count: int) -> str:
    """A count short enough to sit over a bar: 950, 4.2k, 50k, 1.2M."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= size:
            value = count / size
            return f"{value:.1f}{suffix}" if value < 9.95 else f"{value:.0f}{suffix}"
    return str(count)
