"""The report's plots as PNG bytes: small multiples of the metrics against K, the safety trade-off, loss curves.

Plots are deterministic: the Agg backend, a fixed size and dpi, and no software tag in the PNG, so the same
rows give the same bytes. Rates are drawn in percent with their 95% intervals as error bars.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from safemix.report.by_k import Cell, cell_order, group_cells
from safemix.report.runs import Model, Row
from safemix.report.sections import Figure

DPI = 100
PANEL_INCHES = (4.6, 3.4)
SMALL_PANEL_INCHES = (4.1, 2.7)  # three across fill the report's 1,240 px at 100 dpi
LEGEND_COLUMNS = 3
TRADEOFF_INCHES = (6.4, 5.0)  # one panel whose point labels need room
MAX_COLUMNS = 3
K_LABEL = "K (safety examples in the training mixture)"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display; figures go to PNG bytes
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any, rect: tuple[float, float, float, float] | None = None) -> bytes:
    """The figure as PNG bytes, laid out tightly within ``rect`` (figure fractions; room left for a legend)."""
    buffer = io.BytesIO()
    figure.tight_layout(rect=rect)
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


@dataclass(frozen=True)
class PanelLine:
    """One line of a suite's panel: a measure of one model name (and scorer) against K, a cell per K."""

    suite: str
    label: str
    colour: str
    cells: dict[int | None, Cell]  # None: the base model


DEFAULT_COLOURS = tuple(f"C{number}" for number in range(10))


def panel_lines(rows: list[Row], title: str = "", colours: tuple[str, ...] = DEFAULT_COLOURS) -> list[PanelLine]:
    """A line per (suite, model name, scorer) of one metric's rows; lines of the same (model name, scorer) share a
    colour and a label (``title``, plus the model name and the scorer where they vary)."""
    names = sorted({row.model.name for row in rows})
    scorers = sorted({row.metric.scorer for row in rows})
    lines: list[PanelLine] = []
    for (suite, name, scorer, k), cell in sorted(group_cells(rows).items(), key=lambda item: cell_order(item[0])):
        parts = [*([title] if title else []), *([name] if len(names) > 1 else []),
                 *([scorer] if len(scorers) > 1 or not title else [])]
        colour = colours[(names.index(name) * len(scorers) + scorers.index(scorer)) % len(colours)]
        if not lines or (lines[-1].suite, lines[-1].label) != (suite, " · ".join(parts)):
            lines.append(PanelLine(suite, " · ".join(parts), colour, {}))
        lines[-1].cells[k] = cell
    return lines


def metric_vs_k(rows: list[Row], name: str, ylabel: str, caption: str) -> Figure:
    """One metric against K in small multiples, a panel per suite (in the rows' order), a line per scorer."""
    return suite_panels(panel_lines(rows), list(dict.fromkeys(row.metric.suite for row in rows)), name, ylabel, caption)


def suite_panels(lines: list[PanelLine], suites: list[str], name: str, ylabel: str, caption: str) -> Figure:
    """Small multiples: one panel per suite with the same axes, every line of the suite against K.

    K sits at evenly spaced positions (0, 100, 1000 are one step apart), the same in every panel. A point is the
    mean over seeds with its 95% interval as an error bar (one seed's Wilson interval, or the seeds' mean
    half-width); with several seeds a band shows the lowest and highest seed. The base model is a dashed line in
    its line's colour, its interval shaded. One legend for the whole figure, below the panels.
    """
    shown = [suite for suite in suites if any(line.suite == suite for line in lines)]
    ks = sorted({k for line in lines for k in line.cells if k is not None})
    positions = {k: float(number) for number, k in enumerate(ks)}
    scale = 100.0 if all(_is_rate(line) for line in lines) else 1.0
    figure, axes = _panels(len(shown), SMALL_PANEL_INCHES)
    columns = min(MAX_COLUMNS, len(shown))
    for number, (ax, suite) in enumerate(zip(axes, shown)):
        for line in (line for line in lines if line.suite == suite):
            _draw_panel_line(ax, line, positions, scale)
        ax.set_title(suite, fontsize="medium")
        ax.set_xticks(list(positions.values()), [str(k) for k in ks])
        ax.set_xlim(-0.5, max(len(ks) - 0.5, 0.5))
        if scale == 100.0:
            ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        if number % columns == 0:
            ax.set_ylabel(ylabel)
        if number >= len(shown) - columns:
            ax.set_xlabel(K_LABEL)
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    legend_rows = math.ceil(len(handles) / LEGEND_COLUMNS)
    figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=LEGEND_COLUMNS, fontsize="small",
                  frameon=False)
    bottom = (0.3 + 0.22 * legend_rows) / figure.get_figheight()
    return Figure(name, _png(figure, rect=(0, bottom, 1, 1)), caption)


def _is_rate(line: PanelLine) -> bool:
    return all(cell.rows[0].metric.metric.endswith("_rate") for cell in line.cells.values())


def _draw_panel_line(ax: Any, line: PanelLine, positions: dict[int, float], scale: float) -> None:
    """The adapters as points with interval bars (and the seeds' band), the base model as a dashed line."""
    # (x position, estimate, cell) of every adapter with a scored answer, in K order
    points = [(positions[k], estimate, cell) for k, cell in sorted((k, c) for k, c in line.cells.items()
                                                                   if k is not None)
              if (estimate := cell.estimate) is not None]
    if points:
        xs = [x for x, _, _ in points]
        below, above = zip(*(_interval_arms(cell, scale) for _, _, cell in points))
        ax.errorbar(xs, [estimate * scale for _, estimate, _ in points], yerr=[below, above], color=line.colour,
                    marker="o", markersize=4, capsize=2, label=line.label)
        ranges = [cell.seed_range or (estimate, estimate) for _, estimate, cell in points]
        if any(cell.seed_range for _, _, cell in points):
            ax.fill_between(xs, [low * scale for low, _ in ranges], [high * scale for _, high in ranges],
                            color=line.colour, alpha=0.18, linewidth=0, label=f"{line.label}: lowest to highest seed")
    base = line.cells.get(None)
    if base is not None and base.estimate is not None:
        ax.axhline(base.estimate * scale, color=line.colour, linestyle="--", linewidth=1, label=f"{line.label}, base")
        metric = base.scored[0].metric
        if metric.ci_low is not None and metric.ci_high is not None:
            ax.axhspan(metric.ci_low * scale, metric.ci_high * scale, color=line.colour, alpha=0.07)


def _interval_arms(cell: Cell, scale: float) -> tuple[float, float]:
    """The error bar below and above a point: one seed's own interval, or the seeds' mean half-width."""
    estimate = cell.estimate or 0.0
    if len(cell.scored) == 1:
        metric = cell.scored[0].metric
        if metric.ci_low is None or metric.ci_high is None:
            return 0.0, 0.0
        # max(0, ...): at a rate of 0 or 1 the Wilson bound can differ from the estimate by a rounding error
        return max(0.0, estimate - metric.ci_low) * scale, max(0.0, metric.ci_high - estimate) * scale
    half = cell.interval_half_width or 0.0
    return half * scale, half * scale


@dataclass(frozen=True)
class TradeoffLine:
    """One (model name, scorer) of the trade-off plot: (point label, x, y) per model, in K order."""

    label: str
    points: list[tuple[str, float, float]]


def tradeoff(lines: list[TradeoffLine], name: str, caption: str) -> Figure:
    """Refusal of safe prompts (x) against harmful compliance (y), one line per (model name, scorer), points
    labelled by K where the labels do not cover each other or the points."""
    figure, (ax,) = _panels(1, TRADEOFF_INCHES)
    for number, line in enumerate(lines):
        ax.plot([p[1] for p in line.points], [p[2] for p in line.points], marker="o", color=f"C{number % 10}",
                label=line.label)
    ax.set_xlabel("refusal of safe prompts (%)")
    ax.set_ylabel("harmful compliance (%)")
    ax.set_xlim(-2, 102)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper right")
    figure.tight_layout()
    _label_points(ax, [point for line in lines for point in line.points])
    return Figure(name, _png(figure), caption)


LABEL_FONT_POINTS = 8
#: Where a point's label may go, in points from the point, tried in this order.
LABEL_OFFSETS = ((4, 4), (4, -11), (-4, 4), (-4, -11), (7, -3), (-7, -3), (0, 8), (0, -14), (10, 10), (-10, -16))


def _label_points(ax: Any, points: list[tuple[str, float, float]]) -> None:
    """Annotate each point with its text at the first offset whose box covers no earlier label or any point
    (the least covered one when every offset collides)."""
    to_pixels = ax.transData.transform
    pixels_per_point = ax.figure.dpi / 72
    markers = [_box(px, py, 8, 8) for _, x, y in points for px, py in [to_pixels((x, y))]]
    placed: list[tuple[float, float, float, float]] = []
    for text, x, y in points:
        px, py = to_pixels((x, y))
        width = 0.62 * LABEL_FONT_POINTS * len(text) * pixels_per_point
        height = LABEL_FONT_POINTS * pixels_per_point
        candidates = []
        for dx, dy in LABEL_OFFSETS:
            left = px + dx * pixels_per_point - (width if dx < 0 else 0)
            bottom = py + dy * pixels_per_point
            box = (left, bottom, left + width, bottom + height)
            candidates.append((sum(_overlap(box, other) for other in [*placed, *markers]), (dx, dy), box))
        _, (dx, dy), box = min(candidates, key=lambda candidate: candidate[0])
        placed.append(box)
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=LABEL_FONT_POINTS,
                    ha="right" if dx < 0 else "left")


def _box(x: float, y: float, width: float, height: float) -> tuple[float, float, float, float]:
    return x - width / 2, y - height / 2, x + width / 2, y + height / 2


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """The area two boxes (left, bottom, right, top) share."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def loss_curves(logs: list[tuple[Model, dict[str, Any]]], name: str, caption: str) -> Figure:
    """Training loss (left) and validation loss (right) against the optimizer step, one line per adapter."""
    several_models = len({model.name for model, _ in logs}) > 1
    several_seeds = len({model.entry.seed for model, _ in logs}) > 1
    figure, (train_ax, val_ax) = _panels(2)
    for number, (model, log) in enumerate(logs):
        label = ", ".join([*([model.name] if several_models else []), f"K={model.k}",
                           *([f"seed {model.entry.seed}"] if several_seeds else [])])
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
