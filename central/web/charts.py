"""Bar charts drawn on the server as inline SVG: no script and no style attribute, so the pages' Content-Security-
Policy (scripts and styles from this server only, none inline) holds; the colours come from style.css."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

LABEL_W, BAR_W, VALUE_W, ROW_H, BAR_H = 230, 380, 110, 22, 15
LABEL_CHARS = 15
"""A longer label is cut (its whole text is the bar's tooltip)."""


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def bar_chart(chart_id: str, title: str, bars: Sequence[tuple[str, float]],
              shown: Callable[[float], str]) -> SafeString:
    """A horizontal bar for each (label, value), scaled to the largest; `shown` writes a value beside its bar."""
    if not bars:
        return format_html('<p class="chart-empty" id="{}">{}: 无数据 nothing in the range</p>', chart_id, title)
    top = max(value for _, value in bars)
    width, height = LABEL_W + BAR_W + VALUE_W, ROW_H * len(bars) + 4
    rows = []
    for i, (label, value) in enumerate(bars):
        y = 2 + i * ROW_H
        length = BAR_W * value / top if top > 0 else 0.0
        rows.append((label, shown(value), LABEL_W - 6, y + BAR_H - 3, _short(label), LABEL_W, y,
                     f"{length:.1f}", BAR_H, f"{LABEL_W + length + 4:.1f}", y + BAR_H - 3, shown(value)))
    body = format_html_join(
        "", '<g class="bar"><title>{}: {}</title><text class="label" x="{}" y="{}" text-anchor="end">{}</text>'
        '<rect x="{}" y="{}" width="{}" height="{}"></rect><text class="value" x="{}" y="{}">{}</text></g>', rows)
    return format_html('<figure class="chart"><figcaption>{}</figcaption><svg class="chart" id="{}" role="img" '
                       'aria-label="{}" viewBox="0 0 {} {}" width="{}" height="{}">{}</svg></figure>',
                       title, chart_id, title, width, height, width, height, body)
