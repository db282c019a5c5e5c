"""A user's own table: CSV/TSV (optionally gzipped) or parquet, or a DataFrame, with named columns.

The search works on ``x0..x9``; a table's header names become the variable names shown everywhere (printed
formulas, sympy, LaTeX, the front, JSON). A header that is not a plain identifier, or that would read as an
operator or constant (``sin``, ``pi``, ``C``), is mapped to one (``mass (kg)`` -> ``mass_kg``) and the mapping
is shown back. Files are read row by row: at most ``max_rows`` rows are kept (a larger file is an error, or with
``subsample`` a seeded uniform sample of ``max_rows`` rows, drawn while streaming), so memory stays at
``max_rows x columns x 8`` bytes whatever the file's size. Every problem with the data is an
:class:`~nsr.safe_io.InputError` naming it.
"""
from __future__ import annotations

import csv
import gzip
import io
import keyword
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from .expressions import FIT_TOKEN, MAX_VARIABLES
from .operators import SPELLINGS
from .safe_io import InputError

DEFAULT_MAX_ROWS = 1_000_000
MISSING = frozenset({"", "na", "nan", "n/a", "null", "none", "?", "-"})
_RESERVED = set(SPELLINGS) | {"pi", "E", FIT_TOKEN} | set(keyword.kwlist)
_BLOCK = 4096  # rows parsed per NumPy block


def variable_names(columns) -> list:
    """Identifiers for column names, in order: unchanged where already fine, else mapped and deduplicated."""
    out, seen = [], set()
    for c in columns:
        n = re.sub(r"[^A-Za-z0-9_]+", "_", str(c).strip()).strip("_") or "v"
        if n[0].isdigit():
            n = "v" + n
        if n in _RESERVED:
            n += "_"
        base, k = n, 2
        while n in seen:
            n, k = f"{base}_{k}", k + 1
        seen.add(n)
        out.append(n)
    return out


@dataclass
class Table:
    """Numeric columns of a table: ``X`` (rows x features), ``y``, the original column names and the variable
    names they are shown as."""

    X: np.ndarray
    y: np.ndarray
    features: list
    target: str
    names: list = None
    path: str = None
    rows_dropped: int = 0
    rows_in_file: int = 0
    subsampled: bool = False
    renamed: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.names is None:
            self.names = variable_names(self.features)
        self.renamed = {c: n for c, n in zip(self.features, self.names) if str(c) != n}


def _where(path):
    return f"{path}: " if path else ""


def _choose_columns(header, target_column, features, path):
    """(feature indices, target index) in ``header``, or an InputError naming what is wrong."""
    where = _where(path)
    for i, h in enumerate(header):
        if not h:
            raise InputError(f"{where}column {i + 1} of the header has no name")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise InputError(f"{where}duplicate column name(s) {', '.join(map(repr, dup))}")
    shown = ", ".join(map(repr, header[:20])) + (" ..." if len(header) > 20 else "")
    if target_column is None:
        target_column = header[-1]  # the last column, as most tables put the response
    if target_column not in header:
        raise InputError(f"{where}no column {target_column!r} (columns: {shown})")
    if features is None:
        features = [h for h in header if h != target_column]
    else:
        missing = [f for f in features if f not in header]
        if missing:
            raise InputError(f"{where}no column(s) {', '.join(map(repr, missing))} (columns: {shown})")
        if len(set(features)) != len(features):
            raise InputError(f"{where}a feature is named twice in the feature list")
        if target_column in features:
            raise InputError(f"{where}the target column {target_column!r} is also a feature")
    if not features:
        raise InputError(f"{where}no feature columns besides the target {target_column!r}")
    if len(features) > MAX_VARIABLES:
        raise InputError(f"{where}{len(features)} feature columns; at most {MAX_VARIABLES} variables are supported "
                         f"(choose them with --features)")
    return [header.index(f) for f in features], header.index(target_column)


class _Rows:
    """Collects parsed rows (features then target) up to ``max_rows``; with ``subsample`` a reservoir sample."""

    def __init__(self, width, max_rows, subsample, seed, drop_missing, path):
        self.buf = np.empty((min(max_rows, _BLOCK), width))
        self.n = 0  # rows kept
        self.seen = 0  # complete rows offered
        self.dropped = 0
        self.first_bad = None
        self.max_rows, self.subsample, self.drop_missing, self.path = max_rows, subsample, drop_missing, path
        self.rng = np.random.default_rng(seed)

    def add(self, block, lines):
        ok = np.all(np.isfinite(block), axis=1)
        if not ok.all():
            if self.first_bad is None:
                self.first_bad = lines[int(np.argmin(ok))]
            self.dropped += int((~ok).sum())
            block = block[ok]
        room = min(len(block), self.max_rows - self.n)  # rows that fit: copied as one block
        if room:
            if self.n + room > len(self.buf):
                size = min(max(2 * len(self.buf), self.n + room), self.max_rows)
                self.buf = np.resize(self.buf, (size, self.buf.shape[1]))
            self.buf[self.n:self.n + room] = block[:room]
            self.n += room
            self.seen += room
        for row in block[room:]:
            if not self.subsample:
                raise InputError(f"{_where(self.path)}more than {self.max_rows:,} rows (the limit, --max_rows; "
                                 f"memory is max_rows x columns x 8 bytes): pass --subsample to fit a seeded random "
                                 f"sample of {self.max_rows:,} rows, or raise --max_rows")
            self.seen += 1
            j = int(self.rng.integers(0, self.seen))  # Algorithm R: every row kept with equal chance
            if j < self.max_rows:
                self.buf[j] = row

    def finish(self):
        if self.dropped and not self.drop_missing:
            raise InputError(f"{_where(self.path)}{self.dropped:,} row(s) have missing or non-finite values (the "
                             f"first at {self.first_bad}); remove them or pass --drop_missing")
        return self.buf[: self.n].copy()


def _number(cell, line, name, path):
    s = cell.strip()
    if s.lower() in MISSING:
        return math.nan
    try:
        return float(s)
    except ValueError:
        raise InputError(f"{_where(path)}{line}, column {name!r}: {s[:40]!r} is not a number") from None


def _open_text(path):
    raw = open(path, "rb")
    head = raw.read(2)
    raw.seek(0)
    stream = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")


def _delimiter(path, first_line):
    low = path.lower().removesuffix(".gz")
    if low.endswith((".tsv", ".tab")):
        return "\t"
    counts = {d: first_line.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _read_csv(path, target_column, features, rows_kwargs):
    with _open_text(path) as f:
        first = f.readline()
        while first and not first.strip():
            first = f.readline()
        if not first:
            raise InputError(f"{path}: empty file (no header)")
        delim = _delimiter(path, first)
        header = [h.strip() for h in next(csv.reader([first], delimiter=delim))]
        fi, ti = _choose_columns(header, target_column, features, path)
        cols, names = fi + [ti], [header[i] for i in fi + [ti]]
        sink = _Rows(len(cols), path=path, **rows_kwargs)
        reader = csv.reader(f, delimiter=delim)
        block, lines = [], []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            line = f"line {reader.line_num + 1}"
            if len(row) != len(header):
                raise InputError(f"{path}: {line} has {len(row)} cells, the header has {len(header)}")
            block.append([_number(row[c], line, n, path) for c, n in zip(cols, names)])
            lines.append(line)
            if len(block) == _BLOCK:
                sink.add(np.array(block), lines)
                block, lines = [], []
        if block:
            sink.add(np.array(block), lines)
    return header, fi, ti, sink


def _read_parquet(path, target_column, features, rows_kwargs):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's own errors for a file that is not parquet
        raise InputError(f"{path}: not a readable parquet file ({str(e).splitlines()[0][:120]})") from None
    header = list(pf.schema_arrow.names)
    fi, ti = _choose_columns(header, target_column, features, path)
    names = [header[i] for i in fi + [ti]]
    for n in names:
        t = pf.schema_arrow.field(n).type
        if not (str(t).startswith(("int", "uint", "float", "double", "bool", "decimal", "halffloat"))):
            raise InputError(f"{path}: column {n!r} is not numeric ({t})")
    sink, start = _Rows(len(names), path=path, **rows_kwargs), 0
    for batch in pf.iter_batches(batch_size=_BLOCK, columns=names):
        cols = [batch.column(n).to_numpy(zero_copy_only=False) for n in names]
        block = np.column_stack([np.asarray(c, dtype=np.float64) for c in cols])  # nulls arrive as NaN
        sink.add(block, [f"row {start + i + 1}" for i in range(len(block))])
        start += len(block)
    return header, fi, ti, sink


def read_table(path: str, target_column: str = None, features=None, drop_missing: bool = False,
               max_rows: int = DEFAULT_MAX_ROWS, subsample: bool = False, seed: int = 0) -> Table:
    """Read the numeric columns ``features`` (default: all but the target) and ``target_column`` (default: the
    last column) of a CSV/TSV (``.gz`` too) or parquet file."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    kw = dict(max_rows=max_rows, subsample=subsample, seed=seed, drop_missing=drop_missing)
    reader = _read_parquet if path.lower().endswith((".parquet", ".pq")) else _read_csv
    try:
        header, fi, ti, sink = reader(path, target_column, features, kw)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (a CSV/TSV file is expected)") from None
    except (gzip.BadGzipFile, EOFError, csv.Error) as e:
        raise InputError(f"{path}: cannot read it as a table ({e})") from None
    data = sink.finish()
    table = Table(data[:, :-1], data[:, -1], [header[i] for i in fi], header[ti], path=path,
                  rows_dropped=sink.dropped, rows_in_file=sink.seen + sink.dropped, subsampled=sink.seen > sink.n)
    check_data(table.X, table.y, table.target, path)
    return table


def check_data(X, y, target="y", path=None):
    """What a fit needs beyond finite numbers: two rows or more, a target that varies."""
    where = _where(path)
    if len(y) < 2:
        raise InputError(f"{where}{len(y)} data row(s): at least 2 are needed")
    if float(np.ptp(y)) == 0.0:
        raise InputError(f"{where}the target {target!r} is constant ({y[0]:g}): nothing to fit")


def from_frame(X, y=None):
    """(X, y, column names or None, target name or None) from a DataFrame/Series or arrays (names only for
    DataFrames whose column names are all strings, as scikit-learn's ``feature_names_in_``)."""
    names = None
    cols = getattr(X, "columns", None)
    if cols is not None and not isinstance(X, np.ndarray):
        cols = list(cols)
        if all(isinstance(c, str) for c in cols):
            names = cols
        X = X.to_numpy()
    target = getattr(y, "name", None) if y is not None and not isinstance(y, np.ndarray) else None
    if y is not None and hasattr(y, "to_numpy") and not isinstance(y, np.ndarray):
        y = y.to_numpy()
    return X, y, names, target if isinstance(target, str) else None


def split(n: int, test_fraction: float, seed: int):
    """(train rows, test rows): a seeded shuffle, ``floor(n * test_fraction)`` rows (at least 1) held out."""
    if not 0 <= test_fraction < 1:
        raise InputError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if test_fraction == 0:
        return np.arange(n), np.arange(0)
    n_test = max(1, int(n * test_fraction))
    if n - n_test < 2:
        raise InputError(f"{n} rows are too few to hold out {test_fraction:g} of them and fit on 2 or more")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])

