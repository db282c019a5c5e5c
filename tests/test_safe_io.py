"""Safe files: gzipped pickles that load without running code, schema checks, atomic writes."""
import builtins
import gzip
import io
import os
import pickle
import subprocess

import numpy as np
import pytest

from nsr import safe_io
from nsr.safe_io import FORMAT_VERSION, InputError, UnsafePickleError


def payload():
    return {
        "floats": np.linspace(0, 1, 7),
        "float32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ints": np.arange(5, dtype=np.int64),
        "int16": np.array([[1, -2], [3, 4]], dtype=np.int16),
        "bools": np.array([True, False, True]),
        "strings": np.array(["a", "bc"]),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "empty": np.zeros((0, 3)),
        "scalar": np.float64(1.5),
        "np_int": np.int64(7),
        "nested": {"a": [1, 2.5, "x", None, True], "b": (1, (2, 3)), "c": {"d": np.ones(2)}},
        "big_int": 2 ** 70,
        "nan": float("nan"),
        "set": {1, 2},
        "complex": 1 + 2j,
        "bytes": b"\x00\x01",
        "unicode": "héllo ∑",
    }


def assert_same(a, b):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float) and a != a:
        assert b != b
    else:
        assert type(a) is type(b) and a == b


def test_save_load_round_trip(tmp_path):
    path = str(tmp_path / "data.pkl.gz")
    meta = {"command": "python x.py --flag", "params": {"n": 3, "xs": [1.0, 2.0]}}
    records = [payload(), {"id": 1, "X": np.eye(3), "y": np.zeros(3)}, [1, 2, 3]]
    safe_io.save(path, "testkind", meta, records)
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # gzip
    obj = safe_io.load(path, "testkind")
    assert obj["format"] == "testkind" and obj["format_version"] == FORMAT_VERSION
    assert_same(meta, obj["metadata"])
    assert_same(records, obj["records"])


def test_loaded_arrays_are_writable_copies(tmp_path):
    path = str(tmp_path / "a.pkl.gz")
    safe_io.save(path, "k", {}, [{"X": np.arange(4.0)}])
    X = safe_io.load(path, "k")["records"][0]["X"]
    X[0] = 10.0  # a normal, writable array
    assert X[0] == 10.0


def test_dumps_is_deterministic():
    recs = [{"X": np.arange(3.0)}]
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


class _Plain:
    """An ordinary class instance: not plain data either."""

    def __init__(self):
        self.x = 1


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
            f.write(gzip.compress(pickle.dumps(make(str(target)), protocol=protocol)))
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
    data = pickle.dumps(_RunsShell(str(target)))
    pickle.loads(data)
    assert target.exists()


def test_persistent_ids_are_refused():
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "ext" if obj == "secret" else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"a": "secret"})
    with pytest.raises(UnsafePickleError):
        safe_io.loads(buf.getvalue())


def test_object_arrays_are_refused(tmp_path):
    for bad in (np.array([1, "a", None], dtype=object), np.array([[1.0, 2.0]], dtype=object)):
        for wrap in (lambda a: a, lambda a: {"X": a}, lambda a: [[{"deeper": (a,)}]]):
            path = str(tmp_path / "obj.pkl.gz")
            with open(path, "wb") as f:
                f.write(gzip.compress(pickle.dumps({"format": "k", "format_version": FORMAT_VERSION,
                                                    "metadata": {}, "records": [wrap(bad)]})))
            with pytest.raises(InputError, match="object"):
                safe_io.load(path, "k")


def test_deeply_nested_object_arrays_are_refused():
    obj = np.array([1, "a"], dtype=object)
    for _ in range(70):
        obj = [obj]
    data = pickle.dumps({"format": "k", "format_version": FORMAT_VERSION, "metadata": {}, "records": [obj]})
    with pytest.raises(InputError, match="object"):
        safe_io.loads(data)


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
    ({"format": "k", "metadata": {}, "records": []}, "version"),
    ({"format": "k", "format_version": FORMAT_VERSION, "metadata": [], "records": []}, "metadata"),
    ({"format": "k", "format_version": FORMAT_VERSION, "metadata": {}, "records": {}}, "records"),
])
def test_wrong_schema_kind_or_version(tmp_path, obj, word):
    path = tmp_path / "schema.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(obj)))
    with pytest.raises(InputError, match=f"(?i){word}"):
        safe_io.load(str(path), "k")


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
