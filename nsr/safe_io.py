"""The one place files are read and written: gzipped pickles, loaded safely.

* Every file is ``{'format': KIND, 'format_version': N, 'metadata': {...},
  'records': [...]}`` and is checked against its kind's schema on load.
* Loading never runs code from the file and never lets NumPy interpret state
  from it. A restricted unpickler admits only plain containers, numbers and
  strings; NumPy's own pickle hooks trust the pickled dtype (an object dtype
  whose flags say "no objects" makes NumPy read a pointer from the file), so:

  - format 2 (written here) stores arrays and NumPy scalars as persistent ids,
    ``('nd', dtype_str, shape, fortran, raw_bytes)`` and
    ``('sc', dtype_str, raw_bytes)``, rebuilt from a freshly made dtype out of
    an allowlist (bool, ints, floats, complex, fixed-width str/bytes);
  - format 1 (NumPy's hooks inside) still loads: NumPy's pickle callables are
    replaced by stand-ins that only record their arguments, and after the load
    a pass rebuilds the arrays and scalars the same way, using nothing of the
    pickled dtype but its descriptor (its other state must agree with it).

* Before the unpickler runs, the opcodes are scanned for what CPython's own
  unpickler cannot survive: a huge memo index (it allocates, and zeroes, a
  table that large) and deep tuples (hashing them overflows the C stack, so
  the load runs on a thread with a stack sized to the number of tuple opcodes).
* After it, an iterative pass bounds nesting depth, refuses cycles and
  "billion laughs" sharing, and rebuilds the format-1 stand-ins.
* Every failure of a load is an :class:`InputError` naming the file.
* Writes are atomic: a temporary file in the same folder, fsynced, then
  renamed, so an interrupted run never leaves a truncated file at the path.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import sys
import tempfile
import threading
import zlib
from collections import OrderedDict
from typing import Callable, Optional

import numpy as np

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_DEPTH = 200  # containers nested deeper than this are refused (consumers recurse)
MAX_ELEMENTS = 2 ** 31  # per array
MAX_ITEMSIZE = 1 << 20  # bytes per element of a str/bytes array
MAX_PICKLE_BYTES = 4 << 30  # decompressed size limit; NSR_MAX_PICKLE_BYTES overrides it


class InputError(ValueError):
    """Bad input a user can fix; CLIs print it on one line and exit with status 2."""


class UnsafePickleError(InputError):
    pass


class _Bad(Exception):
    """Corrupt data; the boundary turns it into an InputError naming the file."""


class _Refused(Exception):
    """Something a data file may not hold; becomes an UnsafePickleError."""


def _short(text, n=200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 3] + "..."


def _quote(x, n=60) -> str:
    """A short repr of a file-controlled value (never the repr of a big or deep object)."""
    if isinstance(x, (str, bytes, bytearray)):
        return repr(x[:n]) + ("..." if len(x) > n else "")
    if type(x) in (int, float, bool, type(None)):
        return _short(repr(x) if type(x) is not int or x.bit_length() < 200 else "<huge int>", n)
    if type(x) is _Marker:
        return x.name
    t = type(x)
    return _STANDIN_NAMES.get(t) or (t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}")


# ----------------------------------------------------------------------------
# dtypes, arrays and scalars: always built from an allowlisted, fresh dtype

_DTYPE_RE = re.compile(r"([<>|=])(b1|[iu][1248]|f[248]|c(?:8|16)|([US])(0|[1-9][0-9]{0,7}))\Z")
_DTYPES = {}  # descriptor -> validated dtype
_NATIVE = "<" if sys.byteorder == "little" else ">"


def _dtype(descr) -> np.dtype:
    dt = _DTYPES.get(descr) if type(descr) is str else None
    if dt is not None:
        return dt
    m = _DTYPE_RE.match(descr) if type(descr) is str else None
    if m is None:
        kinds = {"O": "object", "V": "void/structured", "M": "datetime", "m": "timedelta"}
        kind = kinds.get(descr[1:2], "") if type(descr) is str else ""
        raise _Refused(f"refusing numpy dtype {_quote(descr)}{f' ({kind})' if kind else ''}: arrays may only be "
                       f"bool, int, float, complex, str or bytes")
    order, code, flexible, count = m.groups()
    if (code in ("b1", "i1", "u1") or flexible == "S") != (order == "|"):
        raise _Bad(f"numpy dtype {descr!r} has an impossible byte order")
    if flexible and int(count) * (4 if flexible == "U" else 1) > MAX_ITEMSIZE:
        raise _Bad(f"numpy dtype {descr!r} is too wide (more than {MAX_ITEMSIZE} bytes per item)")
    dt = np.dtype(descr)
    if len(_DTYPES) < 1024:  # files may name many str widths; keep the cache small
        _DTYPES[descr] = dt
    return dt


def _check_content(dt, raw):
    """Values NumPy itself never makes and may mishandle: bools other than 0/1, code points past U+10FFFF."""
    if dt.kind == "b" and raw.translate(None, b"\0\1"):
        raise _Bad("a bool array holds bytes other than 0 and 1")
    if dt.kind == "U" and raw and (np.frombuffer(raw, dt.byteorder.replace("=", _NATIVE) + "u4") > 0x10FFFF).any():
        raise _Bad("a str array holds invalid code points")


def _array(dt, shape, fortran, raw) -> np.ndarray:
    """A writable array that owns its data, from checked parts."""
    if type(shape) is not tuple or len(shape) > 64:
        raise _Bad(f"bad array shape ({_quote(shape)})")
    n = span = 1
    for d in shape:
        if type(d) is not int or d < 0:
            raise _Bad(f"bad array shape (dimension {_quote(d)})")
        n *= d
        span *= d or 1  # NumPy also refuses (0, 2**40, 2**40)
    if span > MAX_ELEMENTS:
        raise _Bad(f"array shape {_short(shape, 80)} is too large")
    if type(fortran) is not bool or type(raw) not in (bytes, bytearray):
        raise _Bad("bad array layout or data")
    if len(raw) != n * dt.itemsize:
        raise _Bad(f"array data has {len(raw)} bytes, expected {n * dt.itemsize} for shape {_short(shape, 80)}")
    order = "F" if fortran else "C"
    if n == 0:
        return np.empty(shape, dt, order)
    if dt.itemsize == 0:
        raise _Bad("array of zero-width items")
    if dt.kind in "bU":
        _check_content(dt, raw)
    return np.array(np.ndarray(shape, dt, raw, 0, None, order))  # a copy, in the same order


def _scalar(dt, raw):
    if type(raw) not in (bytes, bytearray) or len(raw) != dt.itemsize:
        raise _Bad("bad numpy scalar data")
    if dt.kind == "U":  # decoded exactly: NumPy would strip trailing NULs
        big = dt.byteorder == ">" or (dt.byteorder == "=" and _NATIVE == ">")
        return np.str_(bytes(raw).decode("utf-32-be" if big else "utf-32-le", "surrogatepass"))
    if dt.kind == "S":
        return np.bytes_(bytes(raw))
    _check_content(dt, raw)
    return np.frombuffer(raw, dt, 1)[0]


_SCALAR_TYPES = frozenset({np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                           np.uint64, np.float16, np.float32, np.float64, np.complex64, np.complex128, np.str_,
                           np.bytes_})


def _persistent_id(obj):
    """How format 2 stores an array or NumPy scalar; None for everything else."""
    t = type(obj)
    if t is np.ndarray:
        dt = _dtype_for_writing(obj.dtype)
        fortran = obj.ndim > 1 and obj.flags.f_contiguous and not obj.flags.c_contiguous
        raw = obj.tobytes("F" if fortran else "C")
        _guard_writing(_array, dt, obj.shape, fortran, raw)  # never write what the loader refuses
        return ("nd", dt.str, obj.shape, fortran, raw)
    if t in _SCALAR_TYPES:
        dt = _dtype_for_writing(obj.dtype)
        raw = obj.tobytes()
        _guard_writing(_scalar, dt, raw)
        return ("sc", dt.str, raw)
    return None


def _dtype_for_writing(dt):
    if dt.metadata is not None:
        raise InputError(f"cannot store numpy dtype {dt} with metadata")
    return _guard_writing(_dtype, dt.str)


def _guard_writing(f, *args):
    try:
        return f(*args)
    except (_Bad, _Refused) as e:
        raise InputError(f"cannot store: {e}") from None


# ----------------------------------------------------------------------------
# format 1: stand-ins for NumPy's pickle callables


class _Marker:
    """numpy.ndarray and numpy.dtypes.*DType: recognised, never called."""

    def __init__(self, name):
        self.name = name

    def __call__(self, *args, **kwargs):
        raise _Refused(f"refusing to call {self.name}: not how NumPy pickles data")


_NDARRAY = _Marker("numpy.ndarray")


class _LegacyDType:
    __slots__ = ("spec", "state", "fresh")

    def __init__(self, spec, align=False, copy=False):
        self.spec, self.state, self.fresh = spec, None, None

    def __setstate__(self, state):
        if self.state is not None:
            raise _Bad("a numpy dtype is built twice")
        self.state = state

    def build(self) -> np.dtype:
        """The fresh dtype; the pickled state must agree with it (NumPy would trust it)."""
        if self.fresh is None:
            st = self.state
            if type(self.spec) is not str or type(st) is not tuple or len(st) not in (8, 9) or st[0] != len(st) - 5:
                raise _Bad("bad numpy dtype state")
            dt = _dtype((st[1] if type(st[1]) is str else "?") + self.spec)
            elsize, alignment, flags = st[5:8]
            if (st[2] is not None or st[3] is not None or st[4] is not None or (len(st) == 9 and st[8] is not None)
                    or type(elsize) is not int or elsize not in (-1, dt.itemsize) or type(alignment) is not int
                    or alignment not in (-1, dt.alignment) or type(flags) is not int or flags != dt.flags):
                raise _Refused(f"refusing numpy dtype {dt.str!r}: its pickled state (fields, size, alignment, "
                               f"flags) does not match it")
            self.fresh = dt
        return self.fresh


class _LegacyArray:
    __slots__ = ("args", "state")

    def __init__(self, args):
        self.args, self.state = args, None

    def __setstate__(self, state):
        if self.state is not None or self.args is not None:
            raise _Bad("a numpy array is built twice")
        self.state = state

    def build(self) -> np.ndarray:
        if self.args is not None:  # _frombuffer(buf, dtype, shape, order): pickle protocol 5
            buf, dtype, shape, order = self.args
            if order not in ("C", "F"):
                raise _Bad("bad numpy array order")
            fortran = order == "F"
        else:  # _reconstruct(ndarray, ...) then BUILD (version, shape, dtype, fortran, raw)
            st = self.state
            if type(st) is not tuple or len(st) not in (4, 5) or (len(st) == 5 and st[0] != 1):
                raise _Bad("bad numpy array state")
            shape, dtype, fortran, buf = st[-4:]
        if type(dtype) is not _LegacyDType:
            raise _Bad("bad numpy array dtype")
        return _array(dtype.build(), shape, fortran, buf)


class _LegacyScalar:
    __slots__ = ("dtype", "raw")

    def __init__(self, dtype, raw=None):
        self.dtype, self.raw = dtype, raw

    def __setstate__(self, state):
        raise _Bad("bad numpy scalar")

    def build(self):
        if type(self.dtype) is not _LegacyDType:
            raise _Bad("bad numpy scalar dtype")
        return _scalar(self.dtype.build(), self.raw)


def _reconstruct(cls, shape=None, typecode=None):
    if cls is not _NDARRAY:
        raise _Refused(f"refusing to rebuild an array of class {_quote(cls)}")
    return _LegacyArray(None)


def _frombuffer(buf, dtype, shape, order):
    return _LegacyArray((buf, dtype, shape, order))


def _encode(text, encoding="utf-8", errors="strict"):
    """_codecs.encode as pickle protocols < 3 use it for bytes (only that use)."""
    if type(text) is not str or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _Refused("refusing _codecs.encode other than for bytes")
    return text.encode("latin-1")


def _bytearray(*args):
    """bytearray as pickles use it: never bytearray(n), which allocates n bytes."""
    if not args or (len(args) == 1 and type(args[0]) in (bytes, bytearray)):
        return bytearray(*args)
    if len(args) == 2 and type(args[0]) is str and args[1] in ("latin1", "latin-1"):
        return bytearray(args[0].encode("latin-1"))
    raise _Refused("refusing bytearray() other than of bytes")


def _bytes(*args):
    """bytes() as pickle protocols < 3 write b"" (never bytes(n), which allocates n bytes)."""
    if args:
        raise _Refused("refusing bytes() with arguments")
    return b""


def _tuple(items=()):
    # The pickler never calls tuple(); refuse nesting through it so that the
    # TUPLE opcodes counted by the scan bound how deep tuples can get.
    t = tuple(items)
    if any(type(x) is tuple for x in t):
        raise _Refused("refusing nested tuple()")
    return t


_GLOBALS = {("collections", "OrderedDict"): OrderedDict, ("_codecs", "encode"): _encode}
for _mod in ("builtins", "__builtin__"):  # __builtin__: protocol 2 pickles written by Python 3
    _GLOBALS.update({(_mod, "dict"): dict, (_mod, "list"): list, (_mod, "tuple"): _tuple, (_mod, "set"): set,
                     (_mod, "frozenset"): frozenset, (_mod, "complex"): complex, (_mod, "bytearray"): _bytearray,
                     (_mod, "bytes"): _bytes})
_STANDIN_NAMES = {_LegacyDType: "numpy.dtype", _LegacyArray: "numpy.ndarray", _LegacyScalar: "numpy scalar"}
_NUMPY_GLOBALS = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _LegacyDType}
for _mod in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS.update({(_mod + ".multiarray", "_reconstruct"): _reconstruct,
                           (_mod + ".multiarray", "scalar"): _LegacyScalar,
                           (_mod + ".numeric", "_frombuffer"): _frombuffer})


class _Unpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file)
        self.numpy = False  # format 1: NumPy's pickle callables (stand-ins) were used
        self.pids = False  # format 2: persistent ids were used

    def find_class(self, module, name):
        f = _GLOBALS.get((module, name))
        if f is not None:
            return f
        f = _NUMPY_GLOBALS.get((module, name))
        if f is None and module == "numpy.dtypes" and name.endswith("DType"):
            f = _Marker(f"numpy.dtypes.{name}")
        if f is None:
            raise _Refused(f"refusing to load {_short(module, 80)}.{_short(name, 80)}: the file may only hold "
                           f"plain data")
        self.numpy = True
        return f

    def persistent_load(self, pid):
        self.pids = True
        if type(pid) is tuple and pid:
            if pid[0] == "nd" and len(pid) == 5:
                return _array(_dtype(pid[1]), pid[2], pid[3], pid[4])
            if pid[0] == "sc" and len(pid) == 3:
                return _scalar(_dtype(pid[1]), pid[2])
        tag = pid[0] if type(pid) is tuple and pid else pid
        raise _Refused(f"refusing persistent id {_quote(tag)}")


# ----------------------------------------------------------------------------
# the opcode scan

# Runs of opcodes that need no attention, matched at C speed: argument-free ones
# (but STOP and the tuple builders), fixed-size ones (but the memo puts and
# EXT*), and short strings (one branch per length).
_SHORT = b"|".join(re.escape(bytes([n])) + b"." * n for n in range(48))
_RUN = re.compile(rb"(?s:j....|[\x94(0-2NRb}e\]l)osuadQ\x81\x88\x89\x8f-\x93\x97\x98]|[\x8cCU\x8a](?:" + _SHORT
                  + rb")|[Khq\x80].|J....|M..|[G\x95]........)*+")
_TUPLES = re.compile(rb"[\x85-\x87t]+")
_FIXED, _LEN, _LINES, _TUPLE, _STOP, _PUT4, _PUT, _EXT = range(8)
_OPS = {op: (_FIXED, 0) for op in b"(012NRb}e]l)osuadQ\x81\x88\x89\x8f\x90\x91\x92\x93\x94\x97\x98"}
_OPS.update({op: (_FIXED, 1) for op in b"Khq\x80"})
_OPS.update({ord("M"): (_FIXED, 2), ord("J"): (_FIXED, 4), ord("j"): (_FIXED, 4), ord("G"): (_FIXED, 8),
             0x95: (_FIXED, 8), ord("r"): (_PUT4, 4), ord("p"): (_PUT, 1), ord("."): (_STOP, 0)})
_OPS.update({op: (_LEN, 1) for op in b"\x8cCU\x8a"})
_OPS.update({op: (_LEN, 4) for op in b"BXT\x8b"})
_OPS.update({op: (_LEN, 8) for op in b"\x8d\x8e\x96"})
_OPS.update({op: (_LINES, 1) for op in b"ILFSVgP"})
_OPS.update({op: (_LINES, 2) for op in b"ci"})
_OPS.update({op: (_TUPLE, 0) for op in b"t\x85\x86\x87"})
_OPS.update({op: (_EXT, 0) for op in b"\x82\x83\x84"})


class _Scan:
    """Checks the opcodes the unpickler will run, fed the data in pieces (so that
    it runs while zlib, which releases the GIL, inflates the rest on a thread).
    Where the opcodes turn invalid it stops: the unpickler refuses them before
    it runs anything after."""

    def __init__(self):
        self.next = 0  # offset of the next opcode
        self.fed = 0  # bytes fed so far
        self.tail = b""  # an opcode cut by the end of the last piece
        self.tuples = 0  # tuple-building opcodes: a bound on how deep tuples nest
        self.stop = None  # offset of STOP, or -1 where the opcodes turn invalid
        self.later = False  # a text line spans pieces: finish on the whole data

    def feed(self, piece):
        start, self.fed = self.fed, self.fed + len(piece)
        if self.stop is not None or self.later or self.next >= self.fed:
            return
        buf, base = (self.tail + piece, self.next) if self.tail else (piece, start)
        pos = self._run(buf, self.next - base, base, False)
        self.tail = buf[pos:] if pos < len(buf) and self.stop is None and not self.later else b""
        self.next = base + pos

    def finish(self, data):
        if self.later and self.stop is None:
            self.next = self._run(data, self.next, 0, True)
        if self.stop is None and self.next > len(data):
            raise _Bad("pickle data was truncated")  # before the unpickler allocates that length
        if self.stop is not None and self.stop >= 0 and self.stop != len(data) - 1:
            raise _Bad("data after the end of the pickle")

    def _run(self, buf, pos, base, final):
        n, run = len(buf), _RUN.match
        while pos < n:
            pos = run(buf, pos).end()
            if pos >= n:
                break
            op = buf[pos]
            if op == 0x8C and pos + 1 < n:  # the commonest stop: a string too long for _RUN
                pos += 2 + buf[pos + 1]
                continue
            kind, size = _OPS.get(op, (None, 0))
            if kind is None:
                self.stop = -1
            elif kind == _STOP:
                self.stop = base + pos
            elif kind == _EXT:
                raise _Refused("refusing extension-registry opcodes")
            elif kind == _TUPLE:  # counted; a run of them at once (deep tuples are long runs)
                end = _TUPLES.match(buf, pos).end()
                self.tuples += end - pos
                pos = end
                continue
            elif kind == _LINES or kind == _PUT:
                end = pos
                for _ in range(size):
                    end = buf.find(b"\n", end + 1)
                    if end < 0:
                        self.later = not final and n - pos > 65536
                        if final:
                            self.stop = -1
                        return pos
                if kind == _PUT:
                    self._check_memo(buf[pos + 1:end], base + pos, False)
                pos = end + 1
                continue
            elif pos + 1 + size > n:  # cut by the end of the piece
                if final:
                    self.stop = -1
            elif kind == _FIXED:
                pos += 1 + size
                continue
            elif kind == _PUT4:
                self._check_memo(buf[pos + 1:pos + 5], base + pos, True)
                pos += 5
                continue
            else:  # _LEN: may skip into later pieces
                length = int.from_bytes(buf[pos + 1:pos + 1 + size], "little", signed=op in b"T\x8b")
                if length < 0:
                    self.stop = -1
                else:
                    pos += 1 + size + length
                    continue
            return pos
        return pos

    @staticmethod
    def _check_memo(arg, offset, binary):
        try:
            idx = int.from_bytes(arg, "little") if binary else int(arg)
        except ValueError:
            raise _Bad("bad memo index") from None
        # The unpickler zeroes a table of 2 * idx pointers at once; a real pickler
        # numbers memo entries in order, one per object (several bytes each).
        if idx > offset // 4 + 1024:
            raise _Bad(f"memo index {idx} out of range")


class _WholeInput:
    """The unpickler's file: all the data at the first read. From a real file the
    unpickler reads each frame, and an opcode running past a frame's end gets its
    argument from the bytes after it, skipping the rest of the frame: not the
    opcodes the scan checked. Given everything at once it never reads again."""

    def __init__(self, data):
        self.data = data

    def read(self, n=-1):
        data, self.data = self.data, b""
        return data

    def readline(self):
        return b""


# Hashing a tuple nested d deep recurses d times in C (about 60 bytes of stack
# each, with no recursion limit): give the load a stack for the worst case.
_STACK_PER_TUPLE = 256
_STACK_LOCK = threading.Lock()


def _on_big_stack(f, stack_bytes):
    if stack_bytes <= 256 << 10:
        return f()
    out = []

    def run():
        try:
            out.append((True, f()))
        except BaseException as e:  # handed to the caller's thread
            out.append((False, e))

    with _STACK_LOCK:  # stack_size is process-wide
        old = threading.stack_size((stack_bytes + (1 << 20) + 0xFFFF) & ~0xFFFF)
        try:
            t = threading.Thread(target=run, name="safe_io.load", daemon=True)
            t.start()
        except (RuntimeError, MemoryError, ValueError):
            raise _Bad(f"too large to load here (cannot reserve {stack_bytes >> 20} MiB of stack)") from None
        finally:
            threading.stack_size(old)
    t.join()
    ok, value = out[0]
    if ok:
        return value
    raise value


# ----------------------------------------------------------------------------
# the pass after the load

_CONTAINERS = frozenset({dict, list, tuple, set, frozenset, OrderedDict})
_LEAVES = frozenset({str, int, float, bool, type(None), bytes, bytearray, complex, np.ndarray}) | _SCALAR_TYPES
_STANDINS = frozenset({_LegacyArray, _LegacyScalar})


def _kids(o) -> list:
    """The members of a container that are not plain leaves (usually none)."""
    if type(o) is dict or type(o) is OrderedDict:
        if type(o) is OrderedDict and vars(o):
            raise _Refused("refusing an OrderedDict with attributes")
        kids = [v for v in o.values() if type(v) not in _LEAVES]
        if not _LEAVES.issuperset(map(type, o)):
            kids += [k for k in o if type(k) not in _LEAVES]
        return kids
    return [] if _LEAVES.issuperset(map(type, o)) else [x for x in o if type(x) not in _LEAVES]


def _expanded_limit(nbytes: int) -> int:
    """How many elements data of ``nbytes`` pickled bytes may hold counting shared
    containers once per reference: each reference costs pickle bytes, so more
    means shared containers nested in shared containers ("billion laughs")."""
    return 8 * nbytes + (1 << 20)


def _walk(root, limit=None):
    """Check plain data without recursion and replace the format-1 stand-ins:
    bounded depth, no cycles, only plain types. Returns (data, expanded size)."""
    t = type(root)
    if t in _LEAVES:
        return root, 1
    if t in _STANDINS:
        return root.build(), 1
    if t not in _CONTAINERS:
        raise _Refused(f"refusing {_quote(root)}: not plain data")
    done = {}  # id -> [obj, -1 (in progress), kids] or (obj, height, replacement or None, size)
    stack = [(root, 1)]
    while stack:
        o, depth = stack[-1]
        entry = done.get(id(o))
        if entry is None:
            if depth > MAX_DEPTH:
                raise _Bad(f"nested too deeply (more than {MAX_DEPTH} levels)")
            kids = _kids(o)
            if not kids:
                done[id(o)] = (o, 1, None, len(o))
                stack.pop()
                continue
            done[id(o)] = [o, -1, kids]
            for k in kids:
                tk = type(k)
                if tk in _CONTAINERS:
                    e = done.get(id(k))
                    if e is None:
                        if tk is not dict and tk is not OrderedDict and _LEAVES.issuperset(map(type, k)):
                            done[id(k)] = (k, 1, None, len(k))  # the common case, settled without a visit
                        else:
                            stack.append((k, depth + 1))
                    elif e[1] < 0:
                        raise _Bad("a container contains itself")
                elif tk in _STANDINS:
                    if id(k) not in done:
                        done[id(k)] = (k, 0, k.build(), 0)
                else:
                    raise _Refused(f"refusing {_quote(k)}: not plain data")
        elif entry[1] < 0:
            stack.pop()
            height, size, changed = 0, len(o), False
            for k in entry[2]:
                e = done[id(k)]
                height = max(height, e[1])
                size += e[3]
                changed = changed or e[2] is not None
            if height >= MAX_DEPTH:
                raise _Bad(f"nested too deeply (more than {MAX_DEPTH} levels)")
            if limit is not None and size > limit:
                raise _Bad(f"shared containers expand to more than {limit} elements")
            done[id(o)] = (o, height + 1, _replace(o, done) if changed else None, size)
        else:
            stack.pop()
    _, _, new, size = done[id(root)]
    return (root if new is None else new), size


def _replace(o, done):
    """``o`` with its stand-ins (and containers that held them) replaced; None if changed in place."""
    def sub(x):
        if type(x) in _LEAVES:
            return x
        new = done[id(x)][2]
        return x if new is None else new

    t = type(o)
    if t is list:
        o[:] = map(sub, o)
        return None
    if (t is dict or t is OrderedDict) and _LEAVES.issuperset(map(type, o)):
        for k, v in list(o.items()):
            o[k] = sub(v)
        return None
    if t is dict or t is OrderedDict:
        return t((sub(k), sub(v)) for k, v in o.items())
    return t(map(sub, o))


# ----------------------------------------------------------------------------
# reading


def _fail(path, e) -> InputError:
    """Any exception of a load as a one-line InputError naming the file."""
    if isinstance(e, _Refused):
        return UnsafePickleError(f"{path}: {e}")
    if isinstance(e, _Bad):
        return InputError(f"{path}: {e}")
    if isinstance(e, MemoryError):
        return InputError(f"{path}: too large to load (out of memory)")
    if isinstance(e, RecursionError):
        return InputError(f"{path}: nested too deeply")
    try:
        detail = _short(e, 160)
    except Exception:  # str() of an exception may itself fail
        detail = "?"
    return InputError(f"{path}: corrupt pickle ({type(e).__name__}: {detail})")


def _loads(data, path, scan=None):
    """(data, used NumPy's pickle hooks, used persistent ids)."""
    try:
        if scan is None:
            scan = _Scan()
            scan.feed(data)
        scan.finish(data)
        u = _Unpickler(_WholeInput(data))
        obj = _on_big_stack(u.load, scan.tuples * _STACK_PER_TUPLE)
        obj, _ = _walk(obj, _expanded_limit(len(data)))
        if u.numpy and u.pids:
            raise _Bad("mixes format 1 and format 2 encodings")
        return obj, u.numpy, u.pids
    except InputError:
        raise
    except Exception as e:
        raise _fail(path, e) from None


def loads(data: bytes, path: str = "<bytes>"):
    """Unpickle plain data (gzip already removed)."""
    return _loads(data if type(data) is bytes else bytes(data), path)[0]


def _max_pickle_bytes(path) -> int:
    """NSR_MAX_PICKLE_BYTES if set, else 4 GiB or half the available memory if less."""
    env = os.environ.get("NSR_MAX_PICKLE_BYTES")
    if env:
        try:
            return int(env)
        except ValueError:
            raise InputError(f"{path}: cannot load: NSR_MAX_PICKLE_BYTES={_short(env, 40)} is not a number "
                             f"of bytes") from None
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        return min(MAX_PICKLE_BYTES, avail // 2)
    except (OSError, StopIteration, ValueError, IndexError):
        return MAX_PICKLE_BYTES


def _inflate(raw, limit):
    """Yield the members of a gzip file decompressed, in pieces, up to ``limit``
    bytes in all (a small file may expand 1000x)."""
    total, pos, view = 0, 0, memoryview(raw)
    while True:
        d, pending = zlib.decompressobj(31), b""
        while not d.eof:
            if not pending:
                if pos >= len(raw):
                    raise _Bad("truncated gzip (unexpected end of data)")
                pending, pos = view[pos:pos + (1 << 20)], pos + (1 << 20)
            try:
                piece = d.decompress(pending, 4 << 20)
            except zlib.error as e:
                raise _Bad(f"corrupt gzip ({_short(e, 80)})") from None
            pending = d.unconsumed_tail
            total += len(piece)
            if total > limit:
                raise _Bad(f"decompresses to more than {limit} bytes, the most this machine may load "
                           f"(NSR_MAX_PICKLE_BYTES sets it)")
            if piece:
                yield piece
        pos = min(pos, len(raw)) - len(d.unused_data)
        if pos == len(raw) or not raw[pos:].strip(b"\0"):  # zero padding after the last member is allowed
            return
        if raw[pos:pos + 2] != b"\x1f\x8b":
            raise _Bad("corrupt gzip (trailing garbage)")


def _gunzip_and_scan(raw, limit):
    """The decompressed data and its opcode scan, the scan running while zlib
    (on a thread: it releases the GIL) inflates the rest."""
    scan, pieces = _Scan(), []
    if len(raw) < (1 << 20):
        for piece in _inflate(raw, limit):
            pieces.append(piece)
            scan.feed(piece)
    else:
        import queue

        q, cancel = queue.SimpleQueue(), threading.Event()

        def produce():
            try:
                for piece in _inflate(raw, limit):
                    if cancel.is_set():  # the scan refused the file: stop inflating it
                        return
                    q.put(piece)
                q.put(None)
            except BaseException as e:
                q.put(e)

        threading.Thread(target=produce, name="safe_io.inflate", daemon=True).start()
        try:
            while (piece := q.get()) is not None:
                if isinstance(piece, BaseException):
                    raise piece
                pieces.append(piece)
                scan.feed(piece)
        finally:
            cancel.set()
    return (pieces[0] if len(pieces) == 1 else b"".join(pieces)), scan  # one piece: no copy


def _read(path):
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder, not a file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] != b"\x1f\x8b":
        raise InputError(f"{path}: not a gzip file")
    limit = _max_pickle_bytes(path)
    try:
        data, scan = _gunzip_and_scan(raw, limit)
    except Exception as e:
        raise _fail(path, e) from None
    del raw
    return _loads(data, path, scan)


def read_gzip_pickle(path: str):
    return _read(path)[0]


def load(path: str, kind: str, validate: Optional[Callable] = None):
    """Load a file of ``kind`` ('expressions', 'traces', ...) and check its schema.

    Any failure is a one-line InputError naming the file, the validator's
    included: an unexpected exception of the validator is its ``__cause__``."""
    obj, numpy_hooks, pids = _read(path)
    try:
        _check_payload(obj, kind, path, numpy_hooks, pids)
        if validate is not None:
            validate(obj, path)
    except InputError as e:
        msg = str(e)
        if "\n" in msg or len(msg) > 500:  # a validator quoting a value at length
            raise (UnsafePickleError if isinstance(e, UnsafePickleError) else InputError)(_short(msg, 500)) from e
        raise
    except Exception as e:
        raise InputError(f"{path}: not a valid {kind} file ({type(e).__name__}: {_short(e, 160)})") from e
    return obj


def _check_payload(obj, kind, path, numpy_hooks, pids):
    if not isinstance(obj, dict) or "format" not in obj or "records" not in obj:
        raise InputError(f"{path}: not a {kind} file (expected a dict with 'format' and 'records')")
    if type(obj["format"]) is not str or obj["format"] != kind:
        raise InputError(f"{path}: is a {_quote(obj['format'])} file, expected {kind!r}")
    version = obj.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise InputError(f"{path}: format version {_quote(version)} is not supported (this toolkit reads "
                         f"{' and '.join(map(str, READABLE_VERSIONS))})")
    if (version == 1 and pids) or (version == 2 and numpy_hooks):
        raise UnsafePickleError(f"{path}: refusing a format {version} file that stores arrays the way format "
                                f"{3 - version} does")
    if not isinstance(obj.get("metadata", {}), dict) or not isinstance(obj["records"], list):
        raise InputError(f"{path}: 'metadata' must be a dict and 'records' a list")
    obj.setdefault("metadata", {})


def checked_records(obj, path, what, keys):
    """A loaded file's records, each checked to be a dict holding ``keys``: the first
    checks every validator makes, worded alike (``what`` names the file's content)."""
    records = obj["records"]
    if not records:
        raise InputError(f"{path}: the {what} file holds no records")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise InputError(f"{path}: record {i} is not a dict")
        missing = [k for k in keys if k not in r]
        if missing:
            raise InputError(f"{path}: record {i} lacks {', '.join(map(repr, missing))}")
    return records


# ----------------------------------------------------------------------------
# writing

_GZIP_CHUNK = 4 << 20
_GZIP_LEVEL = 3  # traces are large: level 3 writes ~2.3x faster than 6 for ~12% more bytes


def _gzip_member(chunk: bytes) -> bytes:
    c = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip member (mtime 0, so output is deterministic)
    return c.compress(chunk) + c.flush()


def gzip_bytes(raw: bytes) -> bytes:
    """gzip, compressed in parallel for large data: independent 4 MB members
    (like pigz), which every gzip reader, Python's included, reads as one stream."""
    if len(raw) <= _GZIP_CHUNK:
        return _gzip_member(raw)
    chunks = [raw[i:i + _GZIP_CHUNK] for i in range(0, len(raw), _GZIP_CHUNK)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(len(chunks), os.cpu_count() or 1)) as pool:  # zlib releases the GIL
        return b"".join(pool.map(_gzip_member, chunks))


class _Pickler(pickle.Pickler):
    persistent_id = staticmethod(_persistent_id)


def _pickle_payload(payload) -> bytes:
    """Format 2 pickle bytes, or an InputError for anything the loader would refuse."""
    try:
        _, size = _walk(payload)
    except (_Bad, _Refused) as e:
        raise InputError(f"cannot store: {e}") from None
    buf = io.BytesIO()
    _Pickler(buf, protocol=4).dump(payload)
    data = buf.getvalue()
    if size > _expanded_limit(len(data)):
        raise InputError("cannot store data whose shared containers expand to "
                         f"{size} elements (more than {_expanded_limit(len(data))})")
    return data


def dumps(kind: str, metadata: dict, records: list) -> bytes:
    payload = {"format": kind, "format_version": FORMAT_VERSION, "metadata": metadata, "records": records}
    return gzip_bytes(_pickle_payload(payload))


def atomic_write_bytes(path: str, data: bytes):
    """Write via a temporary file in the same folder, then rename over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    check_output_file(path)
    ensure_output_dir(folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(path: str, kind: str, metadata: dict, records: list, validate: Optional[Callable] = None):
    """Write a file of ``kind``; ``validate(obj, path)``, if given, runs first, so
    that nothing its loader would refuse is ever written."""
    payload = {"format": kind, "format_version": FORMAT_VERSION, "metadata": metadata, "records": records}
    if validate is not None:
        validate(payload, path)
    try:
        data = _pickle_payload(payload)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    atomic_write_bytes(path, gzip_bytes(data))


def check_output_file(path: str):
    """Fail early (before any work, creating nothing) if ``path`` cannot be written as a file."""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder; give a file path")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):  # the folder is made when the file is written
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(f"{existing}: is a file, so {folder} cannot be an output folder")
    if not os.access(existing, os.W_OK):
        raise InputError(f"{existing}: output folder is not writable")


def ensure_output_dir(folder: str):
    """Create an output folder, or raise an InputError naming why it cannot be used."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise InputError(f"{folder}: cannot create output folder ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK):
        raise InputError(f"{folder}: output folder is not writable")
