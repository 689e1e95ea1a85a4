"""Frontier figures: one per hook point, a frontier line per group over every completed run as a faint point."""

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from analysis.groups import GROUP_COLUMN
from analysis.metrics import get_metric

FIGURE_FORMATS = ("png", "svg")


def group_colors(labels: Sequence[str]) -> dict[str, str]:
    """A fixed colour per group label, so a group looks the same in every figure."""
    palette = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: to_hex(palette(index % palette.N)) for index, label in enumerate(labels)}


def frontier_figure(
    points: pd.DataFrame, frontiers: pd.DataFrame, x: str, y: str, title: str, colors: dict[str, str]
) -> Figure:
    """The frontiers of one hook point over its completed runs, on a log x axis."""
    # A bare Figure renders with Agg when saved and never touches pyplot's global state or backend.
    figure = Figure(figsize=(10.0, 5.0), layout="constrained")
    axes = figure.add_subplot()
    for label, group_points in points.groupby(GROUP_COLUMN, sort=False):
        axes.scatter(group_points[x], group_points[y], s=22, color=colors[label], alpha=0.35, linewidths=0)
    for label, frontier in frontiers.groupby(GROUP_COLUMN, sort=False):
        run_count = (points[GROUP_COLUMN] == label).sum()
        legend = f"{label} ({run_count} run{'' if run_count == 1 else 's'})"
        axes.errorbar(
            frontier[x], frontier[y], xerr=error_bars(frontier, x), yerr=error_bars(frontier, y), marker="o",
            markersize=4, color=colors[label], label=legend, elinewidth=1, capsize=2,
        )
    axes.scatter([], [], s=22, color="grey", alpha=0.35, linewidths=0, label="every completed run")
    axes.set_xscale("log")
    # Ticks at 1-2-5 read as plain numbers (10, 20, 50) rather than only the powers of ten.
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel(get_metric(x, "x").label)
    axes.set_ylabel(get_metric(y, "y").label)
    axes.set_title(f"Pareto frontiers: {title}")
    axes.grid(True, which="both", alpha=0.25)
    figure.legend(loc="outside right upper", fontsize="small")
    return figure


def error_bars(frontier: pd.DataFrame, metric: str) -> pd.Series | None:
    """One standard error either side of each frontier point, or None when no point has one (a metric without a
    standard error, or runs from before summaries carried them); a point without one gets no bar."""
    se = get_metric(metric, "axis").se
    if se not in frontier or not frontier[se].notna().any():
        return None
    return frontier[se].astype("float64").fillna(0.0)


def save_figure(figure: Figure, stem: Path) -> list[Path]:
    """The figure written as <stem>.png and <stem>.svg."""
    paths = [stem.with_name(f"{stem.name}.{suffix}") for suffix in FIGURE_FORMATS]
    for path in paths:
        figure.savefig(path, dpi=150)
    return paths


def write_html_figure(
    points: pd.DataFrame, frontiers: pd.DataFrame, x: str, y: str, title: str, colors: dict[str, str], path: Path
) -> None:
    """The same figure as interactive HTML (hover shows each run); needs plotly."""
    import plotly.graph_objects as go  # optional dependency, only needed here

    figure = go.Figure()
    for label, group_points in points.groupby(GROUP_COLUMN, sort=False):
        figure.add_scatter(
            x=group_points[x], y=group_points[y], mode="markers", name=f"{label} runs", legendgroup=label,
            marker={"color": colors[label], "opacity": 0.3}, text=_hover_text(group_points),
        )
    for label, frontier in frontiers.groupby(GROUP_COLUMN, sort=False):
        x_bars, y_bars = error_bars(frontier, x), error_bars(frontier, y)
        figure.add_scatter(
            x=frontier[x], y=frontier[y], mode="lines+markers", name=label, legendgroup=label,
            line={"color": colors[label]}, text=_hover_text(frontier),
            error_x=None if x_bars is None else {"type": "data", "array": x_bars.tolist(), "visible": True},
            error_y=None if y_bars is None else {"type": "data", "array": y_bars.tolist(), "visible": True},
        )
    figure.update_layout(
        title=f"Pareto frontiers: {title}", xaxis={"type": "log", "title": get_metric(x, "x").label},
        yaxis={"title": get_metric(y, "y").label}, template="plotly_white",
    )
    # One shared plotly.min.js beside the pages keeps each page small and still works offline.
    figure.write_html(path, include_plotlyjs="directory")


def _hover_text(points: pd.DataFrame) -> list[str]:
    return [f"{run}<br>sparsity {value:g}" for run, value in zip(points["run"], points["sparsity_value"])]
