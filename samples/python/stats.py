#!/usr/bin/env python3
"""Column statistics over every CSV file under /cove/inputs.

The Python twin of samples/csvstats: for each numeric column, the count,
min, max, mean and sample standard deviation, written to
/cove/outputs/stats.json with a summary on stdout. Standard library only.

It follows csvstats rule for rule so both give the same numbers: the first
row is the header; a column is numeric when every non-empty cell is a plain
decimal number (no NaN, Inf or underscores, which float() alone accepts);
files are visited in byte order of their paths, depth first; the mean and
deviation use Welford's method in file order, the same float operations in
the same sequence.

Usage: stats.py [INPUTS [OUTPUTS]], the directories defaulting to the
sandbox's /cove/inputs and /cove/outputs; tests pass others.
"""

import csv
import json
import math
import os
import re
import sys

INPUTS = "/cove/inputs"
OUTPUTS = "/cove/outputs"

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class Column:
    """Accumulates one column in a single pass."""

    def __init__(self, name):
        self.name = name
        self.non_numeric = False
        self.n = 0
        self.min = 0.0
        self.max = 0.0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, cell):
        cell = cell.strip()
        if cell == "" or self.non_numeric:
            return
        if not NUMBER.fullmatch(cell):
            self.non_numeric = True
            return
        x = float(cell)
        if math.isinf(x):
            self.non_numeric = True
            return
        if self.n == 0 or x < self.min:
            self.min = x
        if self.n == 0 or x > self.max:
            self.max = x
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def stats(self):
        stddev = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
        return {
            "name": self.name,
            "count": self.n,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "stddev": stddev,
        }


def walk(root):
    """Yields regular files under root in the order Go's filepath.WalkDir
    visits them: entries sorted by name, directories entered where they
    sort, symbolic links not followed."""
    for entry in sorted(os.scandir(root), key=lambda e: e.name.encode()):
        if entry.is_dir(follow_symlinks=False):
            yield from walk(entry.path)
        elif entry.is_file(follow_symlinks=False):
            yield entry.path


def stats_of(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return {"rows": 0, "columns": []}
        cols = [Column(name) for name in header]
        rows = 0
        for record in reader:
            if not record:  # a blank line, which Go's encoding/csv skips too
                continue
            rows += 1
            for col, cell in zip(cols, record):
                col.add(cell)
    return {
        "rows": rows,
        "columns": [c.stats() for c in cols if not c.non_numeric and c.n > 0],
    }


def main(argv):
    inputs = argv[1] if len(argv) > 1 else INPUTS
    outputs = argv[2] if len(argv) > 2 else OUTPUTS
    files = []
    for path in walk(inputs):
        if not path.lower().endswith(".csv"):
            continue
        rel = os.path.relpath(path, inputs).replace(os.sep, "/")
        try:
            st = stats_of(path)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            print(f"stats.py: {rel}: {err}", file=sys.stderr)
            return 1
        files.append({"path": rel, **st})
        print(f"stats.py: {rel}: {st['rows']} rows, {len(st['columns'])} numeric columns")
        for c in st["columns"]:
            print(
                f"  {c['name']:<12} count={c['count']} min={c['min']:g} max={c['max']:g}"
                f" mean={c['mean']:.4f} stddev={c['stddev']:.4f}"
            )
    with open(os.path.join(outputs, "stats.json"), "w", encoding="utf-8") as f:
        json.dump({"files": files}, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
