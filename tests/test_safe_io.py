"""Safe files: gzipped pickles that load without running code or trusting NumPy state, schema checks,
atomic writes."""
import builtins
import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

try:
    from numpy._core import multiarray, numeric
except ImportError:  # NumPy 1.x
    from numpy.core import multiarray, numeric

from nsr import safe_io
from nsr.safe_io import FORMAT_VERSION, InputError, UnsafePickleError

from bench.fuzz_loader import _Pid, _PidPickler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def payload():
    return {
        "floats": np.linspace(0, 1, 7),
        "float32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ints": np.arange(5, dtype=np.int64),
        "int16": np.array([[1, -2], [3, 4]], dtype=np.int16),
        "big_endian": np.arange(3, dtype=">i4"),
        "bools": np.array([True, False, True]),
        "strings": np.array(["a", "bc"]),
        "bytes_array": np.array([b"x", b"yz"]),
        "complex64": np.array([1 + 2j], dtype=np.complex64),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "zero_d": np.array(2.5),
        "empty": np.zeros((0, 3)),
        "scalar": np.float64(1.5),
        "np_int": np.int64(7),
        "np_scalars": [np.float32(0.5), np.uint8(3), np.bool_(True), np.str_("hé"), np.bytes_(b"q"), np.float16(2)],
        "nested": {"a": [1, 2.5, "x", None, True], "b": (1, (2, 3)), "c": {"d": np.ones(2)}},
        "ordered": OrderedDict([("z", 1), ("a", 2)]),
        "big_int": 2 ** 70,
        "nan": float("nan"),
        "set": {1, 2},
        "frozenset": frozenset({"a"}),
        "complex": 1 + 2j,
        "bytes": b"\x00\x01",
        "bytearray": bytearray(b"ab"),
        "unicode": "héllo ∑",
    }


def assert_same(a, b):
    if isinstance(a, np.ndarray):
        assert type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
        assert a.ndim < 2 or a.flags.f_contiguous == b.flags.f_contiguous
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert type(a) is type(b) and list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, (float, complex, np.floating, np.complexfloating)) and a != a:
        assert type(a) is type(b) and b != b
    else:
        assert type(a) is type(b) and a == b


def gz_pickle(obj, protocol=4):
    return gzip.compress(pickle.dumps(obj, protocol=protocol))


def file_v1(records, metadata=None, kind="k"):
    """A format-1 payload, as the previous release wrote it (NumPy's pickle hooks inside)."""
    return {"format": kind, "format_version": 1, "metadata": metadata or {}, "records": records}


def test_save_load_round_trip(tmp_path):
    path = str(tmp_path / "data.pkl.gz")
    meta = {"command": "python x.py --flag", "params": {"n": 3, "xs": [1.0, 2.0]}}
    records = [payload(), {"id": 1, "X": np.eye(3), "y": np.zeros(3)}, [1, 2, 3]]
    safe_io.save(path, "testkind", meta, records)
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # gzip
    obj = safe_io.load(path, "testkind")
    assert obj["format"] == "testkind" and obj["format_version"] == FORMAT_VERSION == 2
    assert_same(meta, obj["metadata"])
    assert_same(records, obj["records"])


def test_format_2_holds_no_numpy_pickle():
    raw = gzip.decompress(safe_io.dumps("k", {}, [payload()]))
    assert b"numpy" not in raw and b"_reconstruct" not in raw


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_format_1_files_still_load_identically(tmp_path, protocol):
    path = tmp_path / "old.pkl.gz"
    records = [payload(), {"X": np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)}]
    path.write_bytes(gz_pickle(file_v1(records, {"a": np.float64(2.0)}), protocol))
    obj = safe_io.load(str(path), "k")
    assert obj["format_version"] == 1
    assert_same(records, obj["records"])
    assert_same({"a": np.float64(2.0)}, obj["metadata"])


def test_loaded_arrays_are_writable_copies(tmp_path):
    v2, v1 = tmp_path / "v2.pkl.gz", tmp_path / "v1.pkl.gz"
    safe_io.save(str(v2), "k", {}, [{"X": np.arange(4.0)}])
    v1.write_bytes(gz_pickle(file_v1([{"X": np.arange(4.0)}]), 5))  # protocol 5: the data in a bytearray
    for path in (v2, v1):
        X = safe_io.load(str(path), "k")["records"][0]["X"]
        X[0] = 10.0
        assert X[0] == 10.0 and X.flags.owndata


def test_dumps_is_deterministic():
    recs = [{"X": np.arange(3.0), "s": np.float32(1)}]
    assert safe_io.dumps("k", {"a": 1}, recs) == safe_io.dumps("k", {"a": 1}, recs)


def test_validate_hook_is_called(tmp_path):
    path = str(tmp_path / "v.pkl.gz")
    safe_io.save(path, "k", {}, [1])
    seen = []
    safe_io.load(path, "k", lambda obj, p: seen.append((obj["records"], p)))
    assert seen == [([1], path)]

    def refuse(obj, p):
        raise InputError(f"{p}: nope")

    with pytest.raises(InputError, match="nope"):
        safe_io.load(path, "k", refuse)

    def crash(obj, p):
        return obj["records"][5]  # a validator's own bug: still an InputError naming the file

    with pytest.raises(InputError, match="IndexError") as info:
        safe_io.load(path, "k", crash)
    assert path in str(info.value) and isinstance(info.value.__cause__, IndexError)


def test_save_validates_before_writing(tmp_path):
    path = tmp_path / "out.pkl.gz"

    def refuse(obj, p):
        raise InputError(f"{p}: records must not be empty")

    with pytest.raises(InputError, match="empty"):
        safe_io.save(str(path), "k", {}, [], validate=refuse)
    assert not path.exists()
    safe_io.save(str(path), "k", {}, [1], validate=lambda obj, p: None)
    assert safe_io.load(str(path), "k")["records"] == [1]


class _Plain:
    """An ordinary class instance: not plain data."""

    def __init__(self):
        self.x = 1


def _deep(n):
    obj = []
    for _ in range(n):
        obj = [obj]
    return obj


def _cycle():
    a = [1]
    a.append(a)
    return a


@pytest.mark.parametrize("value,word", [
    (np.array([1, None], dtype=object), "dtype"),
    (np.zeros(2, dtype=[("a", "f8"), ("b", "i4")]), "dtype"),
    (np.zeros(2, dtype="V8"), "dtype"),
    (np.array(["2020-01-01"], dtype="M8[D]"), "dtype"),
    (np.datetime64("2020-01-01"), "datetime64"),
    (np.zeros(2, dtype=np.dtype("f8", metadata={"a": 1})), "metadata"),
    (np.ma.masked_array([1.0, 2.0], mask=[0, 1]), "MaskedArray"),
    (np.dtype("f8"), "dtype"),
    (_Plain(), "_Plain"),
    (_deep(250), "nested too deeply"),
    (_cycle(), "contains itself"),
    (np.array([True]).view(np.uint8).__iadd__(1).view(bool), "bool"),
])
def test_writer_refuses_what_it_cannot_store_faithfully(tmp_path, value, word):
    path = tmp_path / "out.pkl.gz"
    with pytest.raises(InputError, match=word) as info:
        safe_io.save(str(path), "k", {}, [{"v": value}])
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert not path.exists()


# ----------------------------------------------------------------------------
# refusing code


class _RunsShell:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _CallsEval:
    def __reduce__(self):
        return (builtins.eval, ("__import__('os').getpid()",))


class _Popen:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (subprocess.Popen, (["touch", self.target],))


@pytest.mark.parametrize("make", [
    lambda t: _RunsShell(t),
    lambda t: {"format": "expressions", "format_version": 1, "metadata": {}, "records": [_RunsShell(t)]},
    lambda t: [np.zeros(2), {"deep": [(_RunsShell(t),)]}],
    lambda t: _Popen(t),
    lambda t: _CallsEval(),
    lambda t: _Plain(),
], ids=["os.system", "os.system-inside-valid-file", "os.system-nested", "subprocess.Popen", "eval", "class"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, make):
    target = tmp_path / "pwned"
    path = str(tmp_path / "evil.pkl.gz")
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        with open(path, "wb") as f:
            f.write(gz_pickle(make(str(target)), protocol))
        with pytest.raises(UnsafePickleError) as info:
            safe_io.load(path, "expressions")
        assert isinstance(info.value, InputError)
        assert path in str(info.value) and "refus" in str(info.value).lower()
        with pytest.raises(UnsafePickleError):
            safe_io.read_gzip_pickle(path)
        assert not target.exists()


def test_the_malicious_pickle_would_run_without_the_restriction(tmp_path):
    # Guard on the test above: the same bytes do execute with a plain unpickler.
    target = tmp_path / "pwned_control"
    pickle.loads(pickle.dumps(_RunsShell(str(target))))
    assert target.exists()


# ----------------------------------------------------------------------------
# never trusting NumPy state: the issue's reproducer and its relatives

SEGV = """
import gzip, pickle, struct, sys
import numpy as np
sys.path.insert(0, {root!r})
try:
    from numpy._core.multiarray import scalar
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import scalar
from nsr import safe_io

class D:
    def __reduce__(s): return (np.dtype, ('O8', False, True), (3, '|', None, None, None, -1, -1, 0))
class S:
    def __reduce__(s): return (scalar, (D(), struct.pack('<Q', 0x4141414141414141)))
X = np.random.rand(5, 1)
with gzip.open({path!r}, "wb") as f:
    pickle.dump({{"format": "expressions", "format_version": 1, "metadata": {{"s": S()}},
                 "records": [{{"id": 0, "X": X, "y": X[:, 0], "num_vars": 1}}]}}, f)
try:
    safe_io.load({path!r}, "expressions")
except safe_io.InputError as e:
    print("InputError:", e)
"""


def test_the_issue_reproducer_is_an_input_error_not_a_crash(tmp_path):
    code = SEGV.format(root=ROOT, path=str(tmp_path / "evil.pkl.gz"))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"status {proc.returncode}: {proc.stderr[-2000:]}"  # -11: SIGSEGV
    assert proc.stdout.startswith("InputError:") and "'|O8'" in proc.stdout, proc.stdout


def _dtype_pickle(spec, state):
    class D:
        def __reduce__(self):
            return (np.dtype, (spec, False, True), state)

    return D()


class _Reconstruct:
    """An array pickled the way NumPy does (_reconstruct + BUILD), with the parts given."""

    def __init__(self, dtype, shape, raw, fortran=False):
        self.args = (1, shape, dtype, fortran, raw)

    def __reduce__(self):
        return (multiarray._reconstruct, (np.ndarray, (0,), b"b"), self.args)


class _Scalar:
    def __init__(self, dtype, raw):
        self.dtype, self.raw = dtype, raw

    def __reduce__(self):
        return (multiarray.scalar, (self.dtype, self.raw))


class _FromBuffer:
    def __init__(self, dtype, shape, raw):
        self.args = (bytearray(raw), dtype, shape, "C")

    def __reduce__(self):
        return (numeric._frombuffer, self.args)


NO_FIELDS = (None, None, None)
V1_ATTACKS = {
    "object-dtype-flags-0-scalar": _Scalar(_dtype_pickle("O8", (3, "|", *NO_FIELDS, -1, -1, 0)), b"A" * 8),
    "object-dtype-scalar": _Scalar(np.dtype("O"), b"A" * 8),
    "object-array-reconstruct": np.array([1, "a", None], dtype=object),
    "object-array-frombuffer": _FromBuffer(np.dtype("O"), (1,), b"A" * 8),
    "object-dtype-forged-flags": _Reconstruct(_dtype_pickle("O8", (3, "|", *NO_FIELDS, -1, -1, 0)), (1,), b"A" * 8),
    "structured-with-object-field": _Reconstruct(np.dtype([("a", "O"), ("b", "f8")]), (1,), b"\0" * 16),
    "itemsize-2**70": _Scalar(_dtype_pickle("V8", (3, "|", *NO_FIELDS, 2 ** 70, 1, 0)), b"x"),
    "f8-forged-flags": _Reconstruct(_dtype_pickle("f8", (3, "<", *NO_FIELDS, -1, -1, 63)), (1,), b"\0" * 8),
    "f8-forged-itemsize": _Reconstruct(_dtype_pickle("f8", (3, "<", *NO_FIELDS, 16, 8, 0)), (2,), b"\0" * 16),
    "f8-with-fields": _Reconstruct(_dtype_pickle("f8", (3, "<", None, ("a",), {"a": 1}, -1, -1, 0)), (1,), b"\0" * 8),
    "subarray-dtype": _Reconstruct(np.dtype(("f8", (2,))), (1,), b"\0" * 16),
    "void-dtype": _Reconstruct(np.dtype("V8"), (1,), b"\0" * 8),
    "datetime-dtype": np.array(["2020-01-01"], dtype="M8[D]"),
    "huge-shape-short-data": _Reconstruct(np.dtype("f8"), (2 ** 40, 2 ** 40), b"\0" * 8),
    "short-data": _Reconstruct(np.dtype("f8"), (100,), b"\0" * 8),
    "negative-shape": _Reconstruct(np.dtype("f8"), (-1,), b""),
    "bool-shape": _Reconstruct(np.dtype("f8"), (True,), b"\0" * 8),
    "bool-byte-2": _Reconstruct(np.dtype("?"), (1,), b"\2"),
    "unicode-past-10ffff": _Reconstruct(np.dtype("<U1"), (1,), b"\xff" * 4),
    "deep-list": _deep(200_000),
}


@pytest.mark.parametrize("name", sorted(V1_ATTACKS))
def test_numpy_state_is_never_trusted(tmp_path, name):
    path = tmp_path / f"{name}.pkl.gz"
    value = V1_ATTACKS[name]
    if name == "deep-list":  # too deep for pickle.dumps itself: write the opcodes
        data = pickle.dumps(file_v1([]))
        data = data.replace(b"]", b"]" * 200_001 + b"a" * 200_000, 1)
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(gz_pickle(file_v1([{"id": 0, "X": np.ones((2, 1))}], {"s": value})))
    with pytest.raises(InputError) as info:
        safe_io.load(str(path), "k")
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 200 + len(str(path)) and msg.startswith(str(path))




def _pid_file(pid, version=2):
    buf = io.BytesIO()
    _PidPickler(buf, protocol=4).dump({"format": "k", "format_version": version, "metadata": {"x": _Pid(pid)},
                                       "records": []})
    return gzip.compress(buf.getvalue())


@pytest.mark.parametrize("pid,word", [
    (("nd", "<f8", (2,), False), "persistent id"),  # wrong length
    (("zz", "<f8", b""), "persistent id"),  # unknown tag
    ("nd", "persistent id"),
    (("nd", "|O8", (1,), False, b"A" * 8), "dtype"),
    (("nd", "|V8", (1,), False, b"A" * 8), "dtype"),
    (("nd", "<M8[s]", (1,), False, b"A" * 8), "dtype"),
    (("nd", "<U9999999", (1,), False, b"A" * 8), "wide"),
    (("nd", "|f8", (1,), False, b"A" * 8), "byte order"),
    (("nd", "<f8", (3,), False, b"A" * 8), "bytes"),
    (("nd", "<f8", (-1,), False, b""), "shape"),
    (("nd", "<f8", (2 ** 62, 2 ** 62), False, b""), "large"),
    (("nd", "<f8", [1], False, b"A" * 8), "shape"),
    (("nd", "<f8", (1,), 0, b"A" * 8), "layout"),
    (("sc", "|O8", b"A" * 8), "dtype"),
    (("sc", "<f8", b"A" * 4), "scalar"),
])
def test_bad_persistent_ids_are_refused(tmp_path, pid, word):
    path = tmp_path / "pid.pkl.gz"
    path.write_bytes(_pid_file(pid))
    with pytest.raises(InputError, match=word):
        safe_io.load(str(path), "k")


def test_formats_are_not_mixed(tmp_path):
    path = tmp_path / "mixed.pkl.gz"
    path.write_bytes(_pid_file(("nd", "<f8", (1,), False, b"\0" * 8), version=1))  # a v2 id in a v1 file
    with pytest.raises(UnsafePickleError, match="format 1"):
        safe_io.load(str(path), "k")
    path.write_bytes(gz_pickle({"format": "k", "format_version": 2, "metadata": {"x": np.ones(2)}, "records": []}))
    with pytest.raises(UnsafePickleError, match="format 2"):
        safe_io.load(str(path), "k")
    buf = io.BytesIO()
    _PidPickler(buf, protocol=4).dump([np.ones(2), _Pid(("nd", "<f8", (1,), False, b"\0" * 8))])
    with pytest.raises(InputError, match="mixes"):
        safe_io.loads(buf.getvalue())  # both encodings in one pickle


HOSTILE_OPCODES = {
    "memo-index-2**30": (b"\x80\x04N" + b"r" + struct.pack("<I", 0x40000000) + b".", "memo"),  # would zero 16 GB
    "memo-index-text": (b"\x80\x02]replace.", "memo"),  # CPython gh-115952
    "memo-index-put": (b"(p99999999999\n.", "memo"),
    "deep-tuple-key": (b"\x80\x04}" + b")" + b"\x85" * 300_000 + b"Ns.", "deep"),  # hashing it overflows the C stack
    "deep-tuple-in-frozenset": (b"\x80\x04(" + b")" + b"\x85" * 300_000 + b"\x91.", "deep"),
    "extension-opcode": (b"\x80\x04N\x82\x01.", "extension"),
    "data-after-stop": (b"\x80\x04N.N", "after the end"),
    "bytes8-length-2**40": (b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 40) + b"x.", "truncated"),
    "bytearray(2**30)": (b"\x80\x04c__builtin__\nbytearray\nJ\x00\x00\x00\x40\x85R.", "bytearray"),
    "list-contains-itself": (b"\x80\x04]\x94h\x00a.", "itself"),
    # A frame ending inside an argument: read from a file, the unpickler would take "CDEFG" as the string
    # and run the LONG_BINPUT after it, which a scan of the bytes in order does not see.
    "frame-ends-mid-argument": (b"\x80\x04\x95" + struct.pack("<Q", 4) + b"\x8c\x05abCDEFGr\x00\x00\x00\x40.",
                                "truncated"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_OPCODES))
def test_hostile_opcodes_are_input_errors_in_a_subprocess(name):
    # A subprocess, so that a crash fails this test instead of killing pytest.
    data, word = HOSTILE_OPCODES[name]
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); from nsr import safe_io\n"
            f"try: safe_io.loads(sys.stdin.buffer.read())\nexcept safe_io.InputError as e: print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert word in proc.stdout.decode().lower(), proc.stdout


def test_the_scan_fed_in_pieces_agrees_with_the_whole():
    # Files are scanned piece by piece while the rest is still being decompressed.
    import random

    rng = random.Random(0)
    for obj in ({"a": "x" * 70_000, "b": [1, 2.5, (3, (4,))], "c": np.arange(100.0)}, list(range(3000))):
        for protocol in range(6):
            data = pickle.dumps(obj, protocol=protocol)
            whole = safe_io._Scan()
            whole.feed(data)
            whole.finish(data)
            for _ in range(10):
                cuts = sorted(rng.sample(range(1, len(data)), 20)) + [len(data)]
                scan = safe_io._Scan()
                for a, b in zip([0] + cuts, cuts):
                    scan.feed(data[a:b])
                scan.finish(data)
                assert (scan.tuples, scan.stop) == (whole.tuples, whole.stop) and whole.stop == len(data) - 1


def test_billion_laughs_are_refused():
    layer = [1] * 10
    for _ in range(40):
        layer = [layer] * 10  # 10**40 elements through shared references
    with pytest.raises(InputError, match="expand"):
        safe_io.dumps("k", {}, [layer])
    with pytest.raises(InputError, match="expand"):
        safe_io.loads(pickle.dumps(file_v1([layer])))


def test_gzip_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(file_v1([b"\0" * (20 << 20)]))))
    assert safe_io.load(str(path), "k")["records"][0] == b"\0" * (20 << 20)
    monkeypatch.setenv("NSR_MAX_PICKLE_BYTES", str(10 << 20))
    with pytest.raises(InputError, match="more than 10485760 bytes"):
        safe_io.load(str(path), "k")


# ----------------------------------------------------------------------------
# damaged or foreign files


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.pkl.gz")
    with pytest.raises(InputError, match="no such file") as info:
        safe_io.load(path, "k")
    assert path in str(info.value)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(InputError, match="folder"):
        safe_io.load(str(tmp_path), "k")


def test_unreadable_file(tmp_path, monkeypatch):
    path = str(tmp_path / "locked.pkl.gz")
    safe_io.save(path, "k", {}, [1])
    real_open = builtins.open

    def deny(p, *a, **kw):
        if os.fspath(p) == path:
            raise PermissionError(13, "Permission denied", p)
        return real_open(p, *a, **kw)

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(InputError, match="(?i)cannot read|permission"):
        safe_io.load(path, "k")


def test_not_gzip(tmp_path):
    path = tmp_path / "plain.pkl.gz"
    path.write_bytes(pickle.dumps({"format": "k", "format_version": 1, "metadata": {}, "records": []}))
    with pytest.raises(InputError, match="gzip"):
        safe_io.load(str(path), "k")
    path.write_bytes(b"")
    with pytest.raises(InputError, match="gzip"):
        safe_io.load(str(path), "k")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_gzip(tmp_path, keep):
    data = safe_io.dumps("k", {}, [np.random.default_rng(0).standard_normal(2000)])
    path = tmp_path / "cut.pkl.gz"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match="(?i)truncated|corrupt"):
        safe_io.load(str(path), "k")


def test_corrupt_gzip_body(tmp_path):
    data = bytearray(safe_io.dumps("k", {}, [np.arange(500.0)]))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "flip.pkl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="(?i)truncated|corrupt"):
        safe_io.load(str(path), "k")
    path.write_bytes(safe_io.dumps("k", {}, [1]) + b"garbage")
    with pytest.raises(InputError, match="trailing"):
        safe_io.load(str(path), "k")


def test_multi_member_gzip_loads(tmp_path):
    records = [np.random.default_rng(1).standard_normal(1 << 20)]  # 8 MB: parallel 4 MB members
    data = safe_io.dumps("k", {}, records)
    assert data.count(b"\x1f\x8b\x08") >= 2
    path = tmp_path / "big.pkl.gz"
    path.write_bytes(data)
    assert_same(records, safe_io.load(str(path), "k")["records"])


def test_gzip_of_garbage_is_a_corrupt_pickle(tmp_path):
    path = tmp_path / "garbage.pkl.gz"
    path.write_bytes(gzip.compress(b"this is not a pickle at all"))
    with pytest.raises(InputError, match="(?i)pickle"):
        safe_io.load(str(path), "k")


@pytest.mark.parametrize("obj,word", [
    ([1, 2, 3], "expected a dict"),
    ({"records": []}, "expected a dict"),
    ({"format": "k"}, "expected a dict"),
    ({"format": "traces", "format_version": FORMAT_VERSION, "metadata": {}, "records": []}, "traces"),
    ({"format": "k", "format_version": 99, "metadata": {}, "records": []}, "version"),
    ({"format": "k", "format_version": True, "metadata": {}, "records": []}, "version"),
    ({"format": "k", "metadata": {}, "records": []}, "version"),
    ({"format": "k", "format_version": FORMAT_VERSION, "metadata": [], "records": []}, "metadata"),
    ({"format": "k", "format_version": FORMAT_VERSION, "metadata": {}, "records": {}}, "records"),
])
def test_wrong_schema_kind_or_version(tmp_path, obj, word):
    path = tmp_path / "schema.pkl.gz"
    path.write_bytes(gz_pickle(obj))
    with pytest.raises(InputError, match=f"(?i){word}"):
        safe_io.load(str(path), "k")


# ----------------------------------------------------------------------------
# property: plain data round-trips exactly

_DTYPES = ["?", "i1", "i2", "<i4", ">i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "<f8", ">f8", "c8", "c16",
           "<U3", "S4"]
_arrays = st.builds(lambda a, f: np.asfortranarray(a) if f else a,
                    hnp.arrays(st.sampled_from(_DTYPES).map(np.dtype),
                               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)),
                    st.booleans())
_scalars = st.sampled_from(_DTYPES[:16]).flatmap(lambda d: hnp.from_dtype(np.dtype(d)).map(
    lambda x: np.array(x, dtype=d)[()]))
_leaves = (st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8) | st.none() | st.booleans()
           | st.complex_numbers() | _arrays | _scalars)
_data = st.recursive(_leaves, lambda c: st.lists(c, max_size=4) | st.tuples(c, c)
                     | st.dictionaries(st.text(max_size=4) | st.integers(), c, max_size=4), max_leaves=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meta=st.dictionaries(st.text(max_size=5), _data, max_size=3), records=st.lists(_data, max_size=3))
def test_plain_data_round_trips(tmp_path_factory, meta, records):
    path = str(tmp_path_factory.getbasetemp() / "prop.pkl.gz")
    safe_io.save(path, "k", meta, records)
    obj = safe_io.load(path, "k")
    assert_same(meta, obj["metadata"])
    assert_same(records, obj["records"])


# ----------------------------------------------------------------------------
# atomic writes


def test_atomic_write_leaves_only_the_file(tmp_path):
    path = tmp_path / "out.pkl.gz"
    safe_io.save(str(path), "k", {}, [1])
    safe_io.save(str(path), "k", {}, [2])  # overwrite
    assert os.listdir(tmp_path) == ["out.pkl.gz"]
    assert safe_io.load(str(path), "k")["records"] == [2]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_write_into_a_missing_folder_creates_it_only_when_writing(tmp_path):
    target = tmp_path / "no" / "such" / "out.pkl.gz"
    safe_io.check_output_file(str(target))  # the early check creates nothing
    assert os.listdir(tmp_path) == []
    safe_io.save(str(target), "k", {}, [1])
    assert safe_io.load(str(target), "k")["records"] == [1]


def test_write_below_a_file_is_an_input_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="(?i)file"):
        safe_io.check_output_file(str(tmp_path / "f" / "out.pkl.gz"))


class _Interrupted(Exception):
    pass


def _interrupt(monkeypatch, where, exc=_Interrupted):
    """Make the next atomic write fail with ``exc`` at ``where``: half-way through
    writing the bytes, at fsync, or at the final rename."""

    def fail(*_a, **_k):
        raise exc("interrupted")

    if where == "write":
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *info):
                self.f.close()
                return False

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                fail()

            def __getattr__(self, name):
                return getattr(self.f, name)

        monkeypatch.setattr(os, "fdopen", lambda fd, *a, **kw: HalfWriter(real_fdopen(fd, *a, **kw)))
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", fail)
    else:
        monkeypatch.setattr(os, "replace", fail)


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
@pytest.mark.parametrize("exc", [_Interrupted, OSError, KeyboardInterrupt])
def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch, where, exc):
    path = tmp_path / "out.pkl.gz"
    safe_io.save(str(path), "k", {"v": 1}, [np.arange(1000.0)])
    before = path.read_bytes()
    _interrupt(monkeypatch, where, exc)
    with pytest.raises(exc):
        safe_io.save(str(path), "k", {"v": 2}, [np.arange(5000.0)])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.pkl.gz"]  # no temporary file left behind
    assert safe_io.load(str(path), "k")["metadata"] == {"v": 1}


def test_interrupted_first_write_leaves_nothing(tmp_path, monkeypatch):
    _interrupt(monkeypatch, "write")
    with pytest.raises(_Interrupted):
        safe_io.save(str(tmp_path / "new.pkl.gz"), "k", {}, [1])
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_ensure_output_dir(tmp_path):
    target = tmp_path / "a" / "b"
    safe_io.ensure_output_dir(str(target))
    assert target.is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError):
        safe_io.ensure_output_dir(str(blocker / "sub"))
