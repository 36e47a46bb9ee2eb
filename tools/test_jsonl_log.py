#!/usr/bin/env python3
"""Checks of jsonl_log.py (standard library only; any python3):

    python3 tools/test_jsonl_log.py      # prints "ok" and exits 0

Rows round-trip; a torn last line is skipped; a bad line before the last, a non-object line, or a keyed row
without its key is a JsonlError naming the file and line, never a silently dropped row.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jsonl_log import JsonlError, append_row, read_keyed, read_rows  # noqa: E402


def expect_error(fn, *needles):
    try:
        fn()
    except JsonlError as exc:
        for needle in needles:
            assert needle in str(exc), f"{needle!r} not in {exc}"
        return
    raise AssertionError(f"no JsonlError (wanted one mentioning {needles})")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.jsonl")
        assert read_rows(path) == []
        rows = [{"suite": "a", "task_id": 1, "v": 1}, {"suite": "b", "task_id": 2, "v": 2},
                {"suite": "a", "task_id": 1, "v": 3}]
        for r in rows:
            append_row(path, r)
        assert read_rows(path) == rows
        keyed = read_keyed(path, ("suite", "task_id"))
        assert keyed == {("a", 1): rows[2], ("b", 2): rows[1]}, keyed

        # A torn last line (with or without trailing blank lines) is skipped; the rows before it are kept.
        with open(path, "ab") as f:
            f.write(b'{"suite": "c", "ta')
        assert read_rows(path) == rows
        with open(path, "ab") as f:
            f.write(b"\n\n")
        assert read_rows(path) == rows

        # The same bad line followed by a good one is damage, not a torn tail.
        append_row(path, {"suite": "d", "task_id": 4})
        expect_error(lambda: read_rows(path), "m.jsonl:4:", "damaged")

        other = os.path.join(tmp, "list.jsonl")
        with open(other, "w") as f:
            f.write('{"suite": "a", "task_id": 1}\n[1, 2]\n{"suite": "b", "task_id": 2}\n')
        expect_error(lambda: read_rows(other), "list.jsonl:2:", "not an object")

        nokey = os.path.join(tmp, "nokey.jsonl")
        append_row(nokey, {"suite": "a"})
        expect_error(lambda: read_keyed(nokey, ("suite", "task_id")), "row 1", "task_id")

        # Bytes that are not UTF-8 are damage too, and a torn tail when last.
        bad = os.path.join(tmp, "bytes.jsonl")
        with open(bad, "wb") as f:
            f.write(b'{"a": 1}\n\xff\xfe\n')
        assert read_rows(bad) == [{"a": 1}]
        with open(bad, "ab") as f:
            f.write(b'{"a": 2}\n')
        expect_error(lambda: read_rows(bad), "bytes.jsonl:2:")
    print("ok")


if __name__ == "__main__":
    main()
