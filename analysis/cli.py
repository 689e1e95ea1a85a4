"""Command line: `python -m analysis SWEEP_DIR... [options]` writes frontier figures and tables."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.compare import comparison_blocks, comparison_footer
from analysis.errors import AnalysisError
from analysis.groups import GROUP_COLUMN
from analysis.metrics import METRICS
from analysis.report import AnalysisResult, analyze
from analysis.runs import status_summary
from analysis.schema import FAILED
from analysis.tables import text_table
from analysis.wandb_source import WANDB_PREFIX

WANDB_OUT_DIR = Path("analysis_out")
MAX_FAILURES_SHOWN = 10


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m analysis`."""
    metrics = ", ".join(METRICS)
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="L0 vs CE-loss Pareto frontiers of SAE sweeps: figures per hook point, tables, comparisons.",
    )
    parser.add_argument("sources", nargs="+", help="sweep directories (searched at any depth) or wandb:ENTITY/PROJECT[/GROUP]")
    parser.add_argument("--x", default="l0", metavar="METRIC", help=f"x metric (default l0); one of {metrics}")
    parser.add_argument(
        "--y", default="ce_loss_increase", metavar="METRIC",
        help=f"y metric (default ce_loss_increase); one of {metrics}",
    )
    parser.add_argument(
        "--group", default="sae_arch,loss", metavar="KEYS",
        help="comma-separated keys, one frontier per combination of values (default sae_arch,loss); a key is a "
        "summary column, else a dotted path into the run's config, e.g. sparsity.coefficient or "
        "config.data.context_size",
    )
    parser.add_argument(
        "--at", metavar="X_VALUES",
        help="comma-separated x values to compare groups at (default: the 1-2-5 values in range)",
    )
    parser.add_argument(
        "--baseline", metavar="KEY=VALUE",
        help="group to divide by: loss=local (same other keys) or all keys, e.g. sae_arch=relu,loss=local",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR",
        help=f"output directory (default <first sweep dir>/analysis, ./{WANDB_OUT_DIR} for wandb)",
    )
    parser.add_argument("--html", action="store_true", help="also write interactive HTML figures (needs plotly)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the analysis the arguments ask for; 0 on success, 2 with a one-line error on bad input."""
    args = build_parser().parse_args(argv)
    out = args.out or default_out_dir(args.sources[0])
    try:
        result = analyze(
            args.sources,
            x=args.x,
            y=args.y,
            group=args.group,
            at=parse_at(args.at) if args.at else None,
            baseline=args.baseline,
            out=out,
            html=args.html,
        )
    except AnalysisError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report_text(result, out))
    return 0


def parse_at(text: str) -> tuple[float, ...]:
    """x values from '10,20,50'."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise AnalysisError(f"--at takes comma-separated numbers, got {text!r}") from None


def default_out_dir(first_source: str) -> Path:
    """<first sweep dir>/analysis, or ./analysis_out when the first source is a wandb project."""
    return WANDB_OUT_DIR if first_source.startswith(WANDB_PREFIX) else Path(first_source) / "analysis"


def comparison_lines(result: AnalysisResult) -> list[str]:
    """The comparison table, one block per hook point: y ± SE at fixed x, then the ratios to the baseline if any,
    and what the marks mean."""
    lines = []
    for caption, table in comparison_blocks(result.comparison, result.x, result.y, result.at):
        lines += ["", caption, text_table(table)]
    return [*lines, *comparison_footer(result.comparison, result.x, result.y, result.at), ""]


def report_text(result: AnalysisResult, out: Path) -> str:
    """What the CLI prints: notes and warnings, the comparison table, failures, the status line and where the
    files are."""
    lines = [f"note: {note}" for note in result.notes] + [f"warning: {warning}" for warning in result.warnings]
    lines += comparison_lines(result)
    failed = result.runs[result.runs["status"] == FAILED]
    for run, group, error in list(zip(failed["run"], failed[GROUP_COLUMN], failed["error"]))[:MAX_FAILURES_SHOWN]:
        lines.append(f"failed: {run} ({group}): {(str(error).strip().splitlines() or [''])[0]}")
    if len(failed) > MAX_FAILURES_SHOWN:
        lines.append(f"... and {len(failed) - MAX_FAILURES_SHOWN} more failed runs (see runs.csv)")
    lines.append(f"runs: {status_summary(result.runs)}")
    lines.append(f"wrote {len(result.files)} files to {out.resolve()}")
    return "\n".join(lines)
