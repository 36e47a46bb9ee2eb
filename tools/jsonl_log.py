"""An append-only JSONL log, the format of every manifest and results file the tools write: one JSON object per
line, appended durably, read back tolerating only what a killed or still-running writer leaves behind.

A writer appends whole lines (`append_row`: one write, then fsync), so the one way a file gets a bad line
without being damaged is a torn last line: a writer killed mid-write, or one writing while it is read. That
line is skipped. A bad line anywhere else means the file was damaged (edited, truncated and appended to, two
files concatenated); skipping it would silently drop a row, so it is a `JsonlError` naming the file and line.

Used from tools/libero and tools/microvla, each of which puts tools/ on sys.path.
"""
import json
import os


class JsonlError(ValueError):
    """A JSONL file damaged before its last line (or a line that is JSON but not an object)."""


def append_row(path, row):
    """Appends `row` as one line in one write and fsyncs it: a killed writer loses at most that line."""
    line = json.dumps(row) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_rows(path):
    """The rows of `path` in file order ([] when it does not exist). Blank lines are ignored; a last line that
    does not parse is skipped as torn; any other line that is not a JSON object raises JsonlError."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    rows = []
    last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if i == last:
                continue  # torn: a writer killed mid-line, or one appending right now
            raise JsonlError(f"{path}:{i + 1}: not a JSON line ({exc}); the file is damaged before its last "
                             f"line: repair or remove that line (rows after it are intact)") from None
        if not isinstance(row, dict):
            raise JsonlError(f"{path}:{i + 1}: a JSON {type(row).__name__}, not an object")
        rows.append(row)
    return rows


def read_keyed(path, key_fields):
    """`read_rows` as a dict keyed by the tuple of `key_fields`; a later row replaces an earlier one with the
    same key (a rerun's). A row missing a key field raises JsonlError."""
    out = {}
    for n, row in enumerate(read_rows(path)):
        missing = [k for k in key_fields if k not in row]
        if missing:
            raise JsonlError(f"{path}: row {n + 1} has no {', '.join(missing)}: not a row of this file's kind")
        out[tuple(row[k] for k in key_fields)] = row
    return out
