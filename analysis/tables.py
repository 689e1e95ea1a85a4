"""Tables as text: CSV and markdown files, and a plain-text rendering for the terminal."""

from pathlib import Path
from typing import Any

import pandas as pd

MISSING_TEXT = "n/a"


def format_cell(value: Any) -> str:
    """A cell as short text: floats to 4 significant digits, missing values as n/a."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return MISSING_TEXT
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_estimate(value: Any, se: Any = None, mark: str = "") -> str:
    """'0.1234 ± 0.0051' (the SE to 2 significant digits), just the value when the SE is missing; then `mark`."""
    text = format_cell(value)
    if text != MISSING_TEXT and format_cell(se) != MISSING_TEXT:
        text += f" ± {se:.2g}"
    return f"{text} {mark}" if mark and text != MISSING_TEXT else text


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    header = [str(column) for column in table.columns]
    rows = [line([format_cell(value) for value in row]) for row in table.itertuples(index=False)]
    return "\n".join([line(header), line(["---"] * len(header)), *rows]) + "\n"


def text_table(table: pd.DataFrame) -> str:
    """The table aligned in columns for a terminal: text to the left, numbers to the right."""
    rows = [[str(column) for column in table.columns]]
    rows += [[format_cell(value) for value in row] for row in table.itertuples(index=False)]
    widths = [max(len(row[index]) for row in rows) for index in range(len(table.columns))]
    numeric = [pd.api.types.is_numeric_dtype(dtype) for dtype in table.dtypes]

    def line(cells: list[str]) -> str:
        aligned = (
            cell.rjust(width) if number else cell.ljust(width) for cell, width, number in zip(cells, widths, numeric)
        )
        return "  ".join(aligned).rstrip()

    return "\n".join(line(row) for row in rows)


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    """The table written as CSV (missing values left empty)."""
    table.to_csv(path, index=False)
    return path


def write_markdown(table: pd.DataFrame, path: Path) -> Path:
    """The table written as a markdown file."""
    return write_text(markdown_table(table), path)


def write_text(text: str, path: Path) -> Path:
    """`text` written to `path`."""
    path.write_text(text)
    return path
