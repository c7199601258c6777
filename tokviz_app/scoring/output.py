"""Writing rows as CSV or JSONL, and reading back what an earlier run wrote (to resume it).

A file's rows are written in one go and flushed, so an interrupted run leaves at most one file's rows
unfinished. On resume, a file counts as done when its rows run from index 0 without gaps and the last one
ends where the text (or its last word) ends; rows of unfinished files are dropped before new rows follow.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO


class OutputError(Exception):
    """OUT cannot be continued (other columns, or not CSV/JSONL); the message says what to do."""


def cell(value) -> str:
    """A CSV cell: empty for None, ids of a span separated by spaces, numbers in full precision. (Rows end
    in "\r\n", the CSV standard, so that a lone "\r" in a token's text is quoted too.)"""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def render(rows: Iterable[dict], columns: list[str], fmt: str) -> str:
    buffer = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow([cell(row[c]) for c in columns])
    else:
        for row in rows:
            values = {c: row[c] for c in columns}
            for key, value in values.items():
                if isinstance(value, float) and not math.isfinite(value):
                    values[key] = None
            buffer.write(json.dumps(values, ensure_ascii=False, allow_nan=False) + "\n")
    return buffer.getvalue()


def header(columns: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(columns)
    return buffer.getvalue()


def read_rows(path: Path, columns: list[str], fmt: str) -> list[dict]:
    """The complete rows of an earlier run's OUT (a torn last line is left out). Raises OutputError when
    OUT was written with other columns."""
    text = _read(path)
    if not text:
        return []
    rows: list[dict] = []
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames != columns:
            raise _other_columns(path, reader.fieldnames or [], columns)
        for row in reader:
            if None not in row.values() and None not in row:  # not torn: every column, nothing extra
                rows.append(row)
        return rows
    for line in text.split("\n"):
        try:
            row = json.loads(line)
        except ValueError:
            continue  # an empty or torn line
        if not isinstance(row, dict):
            raise OutputError(f"{path} does not hold JSON lines of rows; choose another -o.")
        if list(row) != columns:
            raise _other_columns(path, list(row), columns)
        rows.append(row)
    return rows


def _read(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as stream:  # keep "\r" inside texts as written
        return stream.read()


def _other_columns(path: Path, found: list[str], wanted: list[str]) -> OutputError:
    return OutputError(f"{path} was written with other columns ({', '.join(found[:6])}…) than these options "
                       f"give ({', '.join(wanted[:6])}…); choose another -o or remove it.")


def done_files(rows: list[dict], expected_end: dict[str, int]) -> set[str]:
    """Files whose rows in OUT are complete: indices 0..n-1 in order, the last ending at `expected_end`."""
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(str(row["file"]), []).append(row)
    done = set()
    for name, group in by_file.items():
        try:
            indices = [int(r["index"]) for r in group]
            last_end = int(group[-1]["end"])
        except (TypeError, ValueError):
            continue
        if indices == list(range(len(group))) and expected_end.get(name) == last_end:
            done.add(name)
    return done


def keep_only(path: Path, rows: list[dict], keep: set[str], columns: list[str], fmt: str) -> None:
    """Rewrite OUT with the rows of the `keep` files only (atomic rename), when it holds anything else."""
    kept = [r for r in rows if str(r["file"]) in keep]
    text = _read(path)
    fresh = (header(columns) if fmt == "csv" else "") + _rerender(kept, columns, fmt)
    if fresh == text:
        return
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8", newline="") as stream:
        stream.write(fresh)
    os.replace(temporary, path)


def _rerender(rows: list[dict], columns: list[str], fmt: str) -> str:
    if fmt == "jsonl":
        return render(rows, columns, fmt)
    buffer = io.StringIO()  # CSV rows as read: strings already
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([row[c] for c in columns])
    return buffer.getvalue()


class Writer:
    """Rows to stdout or to OUT, one file's rows at a time."""

    def __init__(self, path: Path | None, columns: list[str], fmt: str, stream: TextIO) -> None:
        self.columns, self.fmt = columns, fmt
        fresh = path is None or not path.exists() or path.stat().st_size == 0
        self.stream = stream if path is None else open(path, "a", encoding="utf-8", newline="")
        self._owned = path is not None
        if fresh and fmt == "csv":
            self.stream.write(header(columns))

    def write(self, rows: list[dict]) -> None:
        self.stream.write(render(rows, self.columns, self.fmt))
        self.stream.flush()
        if self._owned:
            os.fsync(self.stream.fileno())

    def close(self) -> None:
        if self._owned:
            self.stream.close()
