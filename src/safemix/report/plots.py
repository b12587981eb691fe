"""The report's plots as PNG bytes: metrics against K, the safety trade-off, and loss curves.

Plots are deterministic: the Agg backend, a fixed size and dpi, and no software tag in the PNG, so the same
rows give the same bytes. Rates are drawn in percent with their Wilson 95% intervals as error bars.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import Any

from safemix.report.runs import Model, Row
from safemix.report.sections import Figure

DPI = 100
PANEL_INCHES = (4.6, 3.4)
TRADEOFF_INCHES = (6.4, 5.0)  # one panel whose point labels need room
MAX_COLUMNS = 3
K_LABEL = "K (safety examples in the training mixture)"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display; figures go to PNG bytes
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    _pyplot().close(figure)
    return buffer.getvalue()


def _panels(n_panels: int, inches: tuple[float, float] = PANEL_INCHES) -> tuple[Any, list[Any]]:
    """A figure with ``n_panels`` axes of ``inches`` each, in rows of at most three; unused axes are hidden."""
    columns = min(MAX_COLUMNS, n_panels)
    rows = math.ceil(n_panels / columns)
    figure, axes = _pyplot().subplots(rows, columns, figsize=(inches[0] * columns, inches[1] * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return figure, flat[:n_panels]


def _scale(rows: list[Row]) -> float:
    """Rates are plotted in percent, means as they are."""
    return 100.0 if rows[0].metric.metric.endswith("_rate") else 1.0


def _line_label(model: Model, scorer: str, several_models: bool) -> str:
    return f"{model.name} · {scorer}" if several_models else scorer


def metric_vs_k(rows: list[Row], name: str, ylabel: str, caption: str) -> Figure:
    """One panel per suite: the metric against K, one line per (model, scorer) with interval bars.

    The base model (no K) is a dashed horizontal line in its line's colour, with its interval shaded.
    """
    by_suite: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_suite[row.metric.suite].append(row)
    scale = _scale(rows)
    lines = sorted({(row.model.name, row.metric.scorer) for row in rows})
    colours = {line: f"C{number % 10}" for number, line in enumerate(lines)}
    several_models = len({model for model, _ in lines}) > 1
    figure, axes = _panels(len(by_suite))
    for ax, suite in zip(axes, sorted(by_suite)):
        for line in lines:
            points = [row for row in by_suite[suite] if (row.model.name, row.metric.scorer) == line]
            if points:
                _draw_line(ax, points, scale, colours[line], _line_label(points[0].model, line[1], several_models))
        ax.set_title(suite)
        ax.set_xlabel(K_LABEL)
        ax.set_ylabel(ylabel)
        if scale == 100.0:
            ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return Figure(name, _png(figure), caption)


def _draw_line(ax: Any, points: list[Row], scale: float, colour: str, label: str) -> None:
    """Adapters as a line with error bars at their K; the base model as a dashed reference line."""
    adapters = sorted((p for p in points if p.model.k is not None and p.metric.estimate is not None),
                      key=lambda p: p.model.sort_key())
    if adapters:
        ks = [p.model.k for p in adapters]
        values = [p.metric.estimate * scale for p in adapters]
        # max(0, ...): at a rate of 0 or 1 the Wilson bound can differ from the estimate by a rounding error
        below = [max(0.0, p.metric.estimate - p.metric.ci_low) * scale if p.metric.ci_low is not None else 0.0
                 for p in adapters]
        above = [max(0.0, p.metric.ci_high - p.metric.estimate) * scale if p.metric.ci_high is not None else 0.0
                 for p in adapters]
        ax.errorbar(ks, values, yerr=[below, above], color=colour, marker="o", capsize=3, label=label)
    for base in (p for p in points if p.model.k is None and p.metric.estimate is not None):
        ax.axhline(base.metric.estimate * scale, color=colour, linestyle="--", linewidth=1, label=f"{label}, base")
        if base.metric.ci_low is not None and base.metric.ci_high is not None:
            ax.axhspan(base.metric.ci_low * scale, base.metric.ci_high * scale, color=colour, alpha=0.08)


def pooled_rate(rows: list[Row]) -> float | None:
    """The share over all prompts of several suites: the rates weighted by their scored counts."""
    n_scored = sum(row.metric.n_scored for row in rows if row.metric.estimate is not None)
    if not n_scored:
        return None
    return sum(row.metric.estimate * row.metric.n_scored for row in rows if row.metric.estimate is not None) / n_scored


def tradeoff(compliance: list[Row], refusal: list[Row], name: str, caption: str) -> Figure | None:
    """Refusal of safe prompts (x) against harmful compliance (y), one point per model, labelled by K.

    Each axis pools every suite of its category; one line per (model name, scorer) joins base and adapters.
    None when no model has both measures from the same scorer.
    """
    points: dict[tuple[str, str], list[tuple[Model, float, float]]] = defaultdict(list)
    for model in sorted({row.model for row in compliance}, key=Model.sort_key):
        for scorer in sorted({row.metric.scorer for row in compliance}):
            x = pooled_rate([r for r in refusal if r.model == model and r.metric.scorer == scorer])
            y = pooled_rate([r for r in compliance if r.model == model and r.metric.scorer == scorer])
            if x is not None and y is not None:
                points[(model.name, scorer)].append((model, 100 * x, 100 * y))
    if not points:
        return None
    several_models = len({model for model, _ in points}) > 1
    figure, (ax,) = _panels(1, TRADEOFF_INCHES)
    for number, (line, line_points) in enumerate(sorted(points.items())):
        colour = f"C{number % 10}"
        ax.plot([p[1] for p in line_points], [p[2] for p in line_points], marker="o", color=colour,
                label=_line_label(line_points[0][0], line[1], several_models))
        for model, x, y in line_points:
            ax.annotate(model.k_text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set_xlabel("refusal of safe prompts (%)")
    ax.set_ylabel("harmful compliance (%)")
    ax.set_xlim(-2, 102)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return Figure(name, _png(figure), caption)


def loss_curves(logs: list[tuple[Model, dict[str, Any]]], name: str, caption: str) -> Figure:
    """Training loss (left) and validation loss (right) against the optimizer step, one line per adapter."""
    several_models = len({model.name for model, _ in logs}) > 1
    figure, (train_ax, val_ax) = _panels(2)
    for number, (model, log) in enumerate(logs):
        label = f"{model.name}, K={model.k}" if several_models else f"K={model.k}"
        for ax, key, style in ((train_ax, "train_loss", "-"), (val_ax, "val_loss", "o-")):
            history = log.get(key) or []
            ax.plot([p["step"] for p in history], [p["loss"] for p in history], style, color=f"C{number % 10}",
                    label=label)
    for ax, title in ((train_ax, "training loss"), (val_ax, "validation loss")):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (mean per token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return Figure(name, _png(figure), caption)
