"""`check_text_source` rejects a `data.path` that cannot give training text (no files, empty,
binary, json records without the text field) with one line naming the key and the file, from
the first bytes of each file, before any model loads; usable text passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sae_sweeps.data.text import SNIFF_BYTES, TextSourceError, check_text_source, load_local_text


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


BAD_SOURCES = {
    # name: (files under tmp_path, data.path relative to tmp_path, text_column, words the message holds)
    "empty file": ({"a.txt": ""}, "a.txt", "text", ["a.txt is empty"]),
    "whitespace only": ({"a.txt": " \n\n\t "}, "a.txt", "text", ["a.txt is empty"]),
    "folder of empty files": ({"d/a.txt": "", "d/b.txt": "\n"}, "d", "text", ["all 2 files are empty"]),
    "binary file": ({"a.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"}, "a.txt", "text", ["a.txt is binary"]),
    "one binary file in a folder": ({"d/a.txt": "Real text.", "d/b.txt": b"\x00\x01"}, "d", "text", ["b.txt is binary"]),
    "utf-16 text": ({"a.txt": "Hello".encode("utf-16")}, "a.txt", "text", ["a.txt is binary"]),
    "jsonl without the field": (
        {"a.jsonl": jsonl([{"body": "x", "id": 1}])}, "a.jsonl", "text",
        ["data.text_column=text", "a.jsonl", "body, id"],
    ),
    "jsonl field that is not text": ({"a.jsonl": jsonl([{"text": 3}])}, "a.jsonl", "text", ["a.jsonl holds int"]),
    "empty jsonl": ({"a.jsonl": "\n"}, "a.jsonl", "text", ["a.jsonl is empty"]),
    "json that is not json": ({"a.json": "{not json"}, "a.json", "text", ["a.json is neither JSON lines"]),
    "json array without the field": (
        {"a.json": json.dumps([{"body": "x"}], indent=2)}, "a.json", "text", ["data.text_column=text", "a.json"],
    ),
    "no files": ({"d/notes.md": "text"}, "d", "text", ["no .txt/.jsonl/.json files in it"]),
    "text and json mixed": ({"d/a.txt": "x", "d/b.jsonl": jsonl([{"text": "y"}])}, "d", "text", ["mixes text and json"]),
}


@pytest.mark.parametrize("name", BAD_SOURCES)
def test_an_unusable_text_source_is_one_line_naming_the_key_and_file(tmp_path, name):
    files, path, column, words = BAD_SOURCES[name]
    for relative, content in files.items():
        write(tmp_path / relative, content)
    with pytest.raises(TextSourceError) as err:
        check_text_source(str(tmp_path / path), column)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith((f"data.path={tmp_path / path}", f"data.text_column={column} "))
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    "files, path, column",
    [
        ({"a.txt": "One large document. " * 1000}, "a.txt", "text"),
        ({"d/a.txt": "", "d/b.txt": "Some text."}, "d", "text"),  # an empty file among text is skipped, not fatal
        ({"a.jsonl": jsonl([{"body": "x"}, {"body": "y"}])}, "a.jsonl", "body"),
        ({"a.json": json.dumps([{"text": "x"}], indent=2)}, "a.json", "text"),
        ({"a.json": jsonl([{"text": "x"}])}, "a.json", "text"),
    ],
)
def test_usable_text_passes(tmp_path, files, path, column):
    for relative, content in files.items():
        write(tmp_path / relative, content)
    check_text_source(str(tmp_path / path), column)


def test_the_check_reads_only_the_start_of_a_text_file(tmp_path):
    """A NUL byte past the first SNIFF_BYTES is not seen: the check does not read the corpus."""
    path = write(tmp_path / "a.txt", b"x" * SNIFF_BYTES + b"\x00")
    check_text_source(str(path))
    # ... nor does leading whitespace as long as the sniff make a file empty
    check_text_source(str(write(tmp_path / "b.txt", b" " * SNIFF_BYTES + b"text")))


def test_loading_a_jsonl_without_the_field_fails_with_the_same_line(tmp_path):
    path = write(tmp_path / "a.jsonl", jsonl([{"body": "x"}]))
    with pytest.raises(TextSourceError, match=r"^data.text_column=text is not a field of .*a.jsonl"):
        load_local_text(str(path), "text")
