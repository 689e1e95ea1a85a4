"""`analyze`: from runs to frontiers, comparison table and figures, and optionally the files holding them."""

import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.budget import budget_messages
from analysis.compare import comparison_blocks, comparison_footer, compare_frontiers, default_comparison_points
from analysis.errors import AnalysisError
from analysis.frontier import frontiers_by_group, plottable_runs
from analysis.groups import GROUP_COLUMN, SITE_COLUMNS, GroupKeys, group_keys_for, site_label, with_group_columns
from analysis.metrics import absence_reasons
from analysis.plots import frontier_figure, group_colors, save_figure, write_html_figure
from analysis.runs import Source, load_runs
from analysis.schema import COMPLETED, CONFIG_COLUMN
from analysis.tables import markdown_table, write_csv, write_markdown, write_text


@dataclass
class AnalysisResult:
    """What `analyze` found, and the files it wrote."""

    x: str
    """Metric on the x axis (log scale)."""
    y: str
    """Metric on the y axis."""
    group: tuple[str, ...]
    """Keys whose values define a group; each group gets its own frontier."""
    at: tuple[float, ...]
    """x values at which the comparison table reads every frontier."""
    runs: pd.DataFrame
    """Every run loaded, completed or not, with a column per group key and a 'group' label column."""
    frontiers: pd.DataFrame
    """The frontier points of each hook point and group, sorted by x."""
    comparison: pd.DataFrame
    """Per hook point and group: y interpolated at each `at`, and the ratio to the baseline group if one was named."""
    figures: dict[str, Figure]
    """One frontier figure per hook point, keyed by '<model> <hook>'."""
    notes: list[str] = field(default_factory=list)
    """What the user should know: several hook points, runs left off the plots, outputs skipped."""
    warnings: list[str] = field(default_factory=list)
    """What makes the comparison weaker than it looks: groups whose frontier is a single point, curves that still
    improve at their largest training budget (analysis/budget.py)."""
    files: list[Path] = field(default_factory=list)
    """Files written, empty when no output directory was given."""


def analyze(
    sources: pd.DataFrame | Source | Sequence[Source],
    *,
    x: str = "l0",
    y: str = "ce_loss_increase",
    group: GroupKeys = "sae_arch,loss",
    at: Sequence[float] | None = None,
    baseline: str | None = None,
    out: Path | str | None = None,
    html: bool = False,
) -> AnalysisResult:
    """Frontiers of `y` against `x` per group and hook point, compared at fixed x; files go to `out` if given.

    `sources` is a runs table from `load_runs`, or what `load_runs` takes (sweep directories, 'wandb:entity/project').
    """
    # A fresh index: rows are matched by index below, and a caller's concatenated tables may repeat labels.
    runs = (sources if isinstance(sources, pd.DataFrame) else load_runs(sources)).reset_index(drop=True)
    keys = group_keys_for(runs, group)
    plottable = plottable_runs(runs, x, y)
    labelled = with_group_columns(runs, keys)
    points = labelled.loc[plottable.index]
    frontiers = frontiers_by_group(runs, x, y, keys)
    if at is not None and not all(value > 0 for value in at):
        raise AnalysisError(f"comparison x values must be positive, got {', '.join(f'{value:g}' for value in at)}")
    at_values = tuple(at) if at else default_comparison_points(frontiers, x)
    comparison = compare_frontiers(frontiers, x, y, keys, at_values, baseline)

    colors = group_colors(list(frontiers[GROUP_COLUMN].unique()))
    point_sites, frontier_sites = _site_labels(points), _site_labels(frontiers)
    site_views = {
        label: (points[point_sites == label], frontiers[frontier_sites == label]) for label in frontier_sites.unique()
    }
    figures = {
        label: frontier_figure(site_points, site_frontiers, x, y, label, colors)
        for label, (site_points, site_frontiers) in site_views.items()
    }
    result = AnalysisResult(x, y, keys, at_values, labelled, frontiers, comparison, figures)

    completed_count = (runs["status"] == COMPLETED).sum()
    if len(points) < completed_count:
        result.notes.append(
            f"{completed_count - len(points)} of {completed_count} completed runs lack a finite {y} or a positive, "
            f"finite {x} (the x axis is logarithmic) and are left off the frontiers{absence_reasons(x, y)}"
        )
    result.warnings += sparse_frontier_warnings(frontiers, x)
    budget_notes, budget_warnings = budget_messages(points, y)
    result.notes += budget_notes
    result.warnings += budget_warnings
    if len(site_views) > 1:
        result.notes.append(
            f"runs cover {len(site_views)} hook points ({'; '.join(site_views)}): one figure per hook point"
        )
    if out is not None:
        result.files = _write_files(result, site_views, colors, Path(out), html)
    if html and importlib.util.find_spec("plotly") is None:
        result.notes.append("plotly is not installed, so no interactive HTML was written (pip install plotly)")
    return result


def sparse_frontier_warnings(frontiers: pd.DataFrame, x: str) -> list[str]:
    """A warning per hook point naming its groups whose frontier has fewer than two points: a point, not a curve,
    so the comparison reads it only at exactly that x (n/a everywhere else)."""
    warnings = []
    for (model, hook), site in frontiers.groupby(list(SITE_COLUMNS), dropna=False, sort=False):
        sizes = site.groupby(GROUP_COLUMN, sort=False)[x].agg(["size", "first"])
        single = sizes[sizes["size"] < 2]
        if len(single):
            groups = "; ".join(f"{label} ({x}={value:g})" for label, value in single["first"].items())
            warnings.append(
                f"{site_label(model, hook)}: {len(single)} of {len(sizes)} groups have a single frontier point, so "
                f"their comparison values are n/a except at that {x} (run more sparsity values): {groups}"
            )
    return warnings


def comparison_markdown(result: AnalysisResult) -> str:
    """comparison.md: the comparison tables as the CLI prints them (± and marks), and what the marks mean."""
    blocks = comparison_blocks(result.comparison, result.x, result.y, result.at)
    footer = comparison_footer(result.comparison, result.x, result.y, result.at)
    tables = "\n".join(f"{caption}\n\n{markdown_table(table)}" for caption, table in blocks)
    return tables + "\n" + "\n\n".join(footer) + "\n"


def _write_files(
    result: AnalysisResult,
    site_views: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
    colors: dict[str, str],
    out: Path,
    html: bool,
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = [
        write_csv(result.runs.drop(columns=CONFIG_COLUMN), out / "runs.csv"),
        write_csv(result.frontiers, out / "frontier.csv"),
        write_markdown(result.frontiers, out / "frontier.md"),
        write_csv(result.comparison, out / "comparison.csv"),
        write_text(comparison_markdown(result), out / "comparison.md"),
    ]
    write_html = html and importlib.util.find_spec("plotly") is not None
    for label, (site_points, site_frontiers) in site_views.items():
        stem = out / f"frontier_{_file_safe(label)}"
        files += save_figure(result.figures[label], stem)
        if write_html:
            html_path = stem.with_name(f"{stem.name}.html")
            write_html_figure(site_points, site_frontiers, result.x, result.y, label, colors, html_path)
            files.append(html_path)
    if write_html:
        files.append(out / "plotly.min.js")  # shared by the HTML pages
    return files


def _site_labels(table: pd.DataFrame) -> pd.Series:
    return pd.Series([site_label(model, hook) for model, hook in zip(table["model"], table["hook"])], index=table.index)


def _file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)
