"""The one place files are read and written: gzipped pickles, loaded safely.

* Loading never runs code from the file: a restricted unpickler admits only
  plain containers, numbers, strings and NumPy arrays/dtypes/scalars; anything
  else (``os.system``, ``builtins.eval``, any class) is refused.
* Every file is ``{'format': KIND, 'format_version': N, 'metadata': {...},
  'records': [...]}`` and is checked against its kind's schema on load.
* Writes are atomic: a temporary file in the same folder, fsynced, then
  renamed, so an interrupted run never leaves a truncated file at the path.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import tempfile
import zlib
from typing import Callable, Optional

import numpy as np

FORMAT_VERSION = 1


class InputError(ValueError):
    """Bad input a user can fix; CLIs print it on one line and exit with status 2."""


class UnsafePickleError(InputError):
    pass


_ALLOWED = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "bytearray"),
    ("collections", "OrderedDict"),
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED |= {(_mod, "_reconstruct"), (_mod, "scalar")}
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED.add((_mod, "_frombuffer"))
_ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype")}
_ALLOWED_PREFIX = ("numpy.dtypes",)  # the concrete dtype classes (Float64DType, ...) of NumPy 2


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED or (module.startswith(_ALLOWED_PREFIX) and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load {module}.{name}: the file may only hold plain data")

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing to load a pickle with persistent ids")


def _check_plain(obj, path):
    """Object arrays would smuggle arbitrary objects through NumPy: refuse them (at any depth)."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, np.ndarray):
            if o.dtype.hasobject:
                raise InputError(f"{path}: object arrays are not allowed in data files")
        elif isinstance(o, dict):
            stack.extend(v for v in o.values() if isinstance(v, (dict, list, tuple, set, frozenset, np.ndarray)))
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(v for v in o if isinstance(v, (dict, list, tuple, set, frozenset, np.ndarray)))


def loads(data: bytes, path: str = "<bytes>"):
    """Unpickle plain data (gzip already removed)."""
    try:
        obj = _SafeUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            ImportError, MemoryError) as e:
        raise InputError(f"{path}: corrupt pickle ({type(e).__name__}: {e})") from None
    _check_plain(obj, path)
    return obj


def read_gzip_pickle(path: str):
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
    try:
        data = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise InputError(f"{path}: truncated or corrupt gzip ({e})") from None
    return loads(data, path)


def load(path: str, kind: str, validate: Optional[Callable] = None):
    """Load a file of ``kind`` ('expressions', 'traces', ...) and check its schema."""
    obj = read_gzip_pickle(path)
    if not isinstance(obj, dict) or "format" not in obj or "records" not in obj:
        raise InputError(f"{path}: not a {kind} file (expected a dict with 'format' and 'records')")
    if obj["format"] != kind:
        raise InputError(f"{path}: is a {obj['format']!r} file, expected {kind!r}")
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(f"{path}: format version {version!r} is not supported (this toolkit reads {FORMAT_VERSION})")
    if not isinstance(obj.get("metadata", {}), dict) or not isinstance(obj["records"], list):
        raise InputError(f"{path}: 'metadata' must be a dict and 'records' a list")
    obj.setdefault("metadata", {})
    if validate is not None:
        validate(obj, path)
    return obj


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


def dumps(kind: str, metadata: dict, records: list) -> bytes:
    payload = {"format": kind, "format_version": FORMAT_VERSION, "metadata": metadata, "records": records}
    return gzip_bytes(pickle.dumps(payload, protocol=4))


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


def save(path: str, kind: str, metadata: dict, records: list):
    atomic_write_bytes(path, dumps(kind, metadata, records))


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
