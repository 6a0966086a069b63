"""The rows `gridtune.predict` writes: CSV, JSON lines or an aligned terminal table, one file per row.

CSV columns are `file, predicted, <one probability column per class>, windows, seconds`, where
`predicted` joins the predicted classes with ';' (empty when no class reaches the threshold). A
JSON line is `{"file", "predicted": [...], "probabilities": {class: p}, "windows", "seconds"}`.
The table is for people: probabilities to two decimals, long file names cut from the left. Rows
are streamed to a file object as they come, or kept for one atomic write at the end.
"""
from __future__ import annotations

import csv
import io
import json

FORMATS = ("csv", "jsonl", "table")
FILE_WIDTH = 40


class Writer:
    def __init__(self, fmt: str, classes: list[str], stream=None):
        if fmt not in FORMATS:
            raise ValueError(f"format={fmt!r}: must be one of {', '.join(FORMATS)}")
        self.fmt, self.classes, self.stream = fmt, list(classes), stream
        self.parts: list[str] = []
        self.n_rows = self.n_windows = 0
        self._emit(self.header())

    def header(self) -> str:
        if self.fmt == "csv":
            return self._csv(["file", "predicted", *self.classes, "windows", "seconds"])
        if self.fmt == "table":
            cells = [f"{'file':<{FILE_WIDTH}}", f"{'predicted':<16}", *(f"{c:>5}" for c in self.classes)]
            return " ".join(cells) + "\n"
        return ""

    @staticmethod
    def _csv(cells) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        return buf.getvalue()

    def format(self, row: dict) -> str:
        probs = [row["probabilities"][c] for c in self.classes]
        if self.fmt == "csv":
            return self._csv([row["file"], ";".join(row["predicted"]), *(f"{p:.6f}" for p in probs),
                              row["windows"], f"{row['seconds']:.3f}"])
        if self.fmt == "jsonl":
            return json.dumps(row) + "\n"
        name = row["file"] if len(row["file"]) <= FILE_WIDTH else "…" + row["file"][-(FILE_WIDTH - 1):]
        cells = [f"{name:<{FILE_WIDTH}}", f"{','.join(row['predicted']) or '-':<16}", *(f"{p:5.2f}" for p in probs)]
        return " ".join(cells) + "\n"

    def row(self, row: dict) -> None:
        self.n_rows += 1
        self.n_windows += int(row["windows"])
        self._emit(self.format(row))

    def _emit(self, text: str) -> None:
        if not text:
            return
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()
        else:
            self.parts.append(text)

    def text(self) -> str:
        return "".join(self.parts)
