"""Fuzzing the safe loader: hostile and mutated files through the real loaders, each in a subprocess.

    python bench/fuzz_loader.py --inputs 100000 --seed 0 --workers 2 --json fuzz.json --findings fuzz_findings
    python bench/fuzz_loader.py --atheris 100000      # optional: coverage-guided, in-process, safe_io.loads only

Inputs are (a) structured attacks (NumPy state forgery, code-running globals, memo and length abuse,
deep nesting, gzip bombs, ...) and (b) mutations of valid expressions, traces and DAgger trace files,
in both format 1 (NumPy's pickle hooks, as the previous release wrote them) and format 2: byte and bit
flips, truncations, inserted and replaced opcodes, spliced chunks, "magic" integers over length fields,
forged dtype descriptors and states, odd values swapped into record fields, and damage to the gzip
stream itself. Each is loaded with its kind's loader (nsr.datasets.load_expressions,
nsr.traces.load_traces) by a pool of long-lived worker processes; a worker that dies or hangs is
replaced. A loaded file is also written back (safe_io.dumps), which must work.

Outcomes: ``valid``, ``input_error`` (both fine) and the findings: ``exception`` (a traceback),
``validator_exception`` (an InputError whose cause is a validator's own exception), ``validator_message``
(a validator's message that load() had to shorten to one line), ``bad_message`` (an error message that
is not one short line), ``resave_failed``, ``crash`` (killed by a signal) and ``hang`` (longer than
--timeout). Each finding's input is saved under --findings.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import pickle
import random
import selectors
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, OrderedDict, defaultdict

import numpy as np

try:
    from numpy._core import multiarray, numeric
except ImportError:  # NumPy 1.x
    from numpy.core import multiarray, numeric

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

KINDS = ("expressions", "traces")
# The gzip bomb is refused only once the loader has inflated up to its limit (4 GiB by default: 15-30 s of
# zlib here), so it gets its own time limit; everything else must finish within --timeout.
HEAVY_TIMEOUT = 180
FINE = ("valid", "input_error", "consumer_refused")
MAX_MESSAGE = 600  # the path (up to ~100 characters) and a short message


# ----------------------------------------------------------------------------
# the worker: loads what it is sent, reports one JSON line per input


def _loaders():
    """The kinds' real loaders; safe_io.load where one cannot be imported (the code is being refactored)."""
    from nsr import safe_io

    out, notes = {}, {}
    for kind, module, name in (("expressions", "nsr.datasets", "load_expressions"),
                               ("traces", "nsr.traces", "load_traces")):
        try:
            out[kind] = getattr(__import__(module, fromlist=[name]), name)
            notes[kind] = f"{module}.{name}"
        except Exception as e:  # noqa: BLE001 - any import failure: fall back, and say so
            out[kind] = lambda path, kind=kind: safe_io.load(path, kind)
            notes[kind] = f"nsr.safe_io.load (importing {module}.{name} failed: {type(e).__name__}: {e})"
    return out, notes


def _one(load, kind, path):
    import traceback

    from nsr import safe_io

    try:
        obj = load(path)
    except safe_io.InputError as e:
        msg = str(e)
        cause = e.__cause__
        if cause is not None and not isinstance(cause, safe_io.InputError):
            tb = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
            return {"outcome": "validator_exception", "type": type(cause).__name__, "msg": msg[:500], "tb": tb[-5000:]}
        if isinstance(cause, safe_io.InputError):  # load() shortened a validator's long message
            return {"outcome": "validator_message", "type": type(e).__name__, "msg": str(cause)[:2000]}
        if "\n" in msg or len(msg) > MAX_MESSAGE:
            return {"outcome": "bad_message", "type": type(e).__name__, "msg": msg[:2000]}
        return {"outcome": "input_error", "type": type(e).__name__, "msg": msg[:300]}
    except BaseException as e:  # noqa: BLE001 - anything else is a finding
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"outcome": "exception", "type": type(e).__name__, "msg": str(e)[:500],
                "tb": traceback.format_exc()[-5000:]}
    try:
        safe_io.dumps(kind, obj["metadata"], obj["records"])  # what loads must be plain data again
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"outcome": "resave_failed", "type": type(e).__name__, "msg": str(e)[:500],
                "tb": traceback.format_exc()[-5000:]}
    return _consume(kind, obj)


def _consume(kind, obj):
    """What loads is then used as the toolkit uses it (a short run of the first record; for traces, relabeling
    and training examples): a consumer may refuse it (InputError), never crash with a traceback."""
    import traceback

    from nsr import safe_io

    try:
        recs = obj["records"][:1]
        if kind == "traces":
            from nsr.examples import convert_record
            from nsr.relabel import Relabeler
            from nsr.tokenizer import Vocab

            for i, r in enumerate(recs):
                Relabeler("best_of_k", 2, 0).relabel_record(r, i)
                list(convert_record(r, Vocab(), "one_step", "improved"))
        else:
            from nsr.config import EvolutionConfig
            from nsr.drivers import file_jobs, run_batch
            from nsr.evaluation import eval_result
            from nsr.search import Searcher

            evo = EvolutionConfig(population_size=4, num_generations=2, constant_fitting=2)
            run_batch(Searcher(evo), file_jobs(recs, 0), eval_result)
    except safe_io.InputError:
        return {"outcome": "consumer_refused"}
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"outcome": "consumer_exception", "type": type(e).__name__, "msg": str(e)[:500],
                "tb": traceback.format_exc()[-5000:]}
    return {"outcome": "valid"}


def worker_main():
    import faulthandler

    faulthandler.enable()  # a crash leaves its stack on stderr (a file the parent reads)
    loaders, notes = _loaders()
    folder = tempfile.mkdtemp(prefix="fuzz-worker-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    path = os.path.join(folder, "input.pkl.gz")
    inp, out = sys.stdin.buffer, sys.stdout
    out.write(json.dumps({"ready": True, "loaders": notes, "folder": folder}) + "\n")
    out.flush()
    try:
        while True:
            head = inp.read(5)
            if len(head) < 5:
                return
            kind, n = struct.unpack("<BI", head)
            data = inp.read(n)
            with open(path, "wb") as f:
                f.write(data)
            t = time.perf_counter()
            res = _one(loaders[KINDS[kind]], KINDS[kind], path)
            res["s"] = round(time.perf_counter() - t, 4)
            out.write(json.dumps(res) + "\n")
            out.flush()
    finally:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


# ----------------------------------------------------------------------------
# valid files to mutate


def _gz(raw: bytes, level=1) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(raw) + c.flush()


TEMPLATES = ("(x0 + 1.0)", "(x0 * 2.0)", "sin(x0)", "((x0 - 1.0) / 2.0)", "(x1 * cos(x0))", "(x0 + (x1 * x1))",
             "1.0", "x1")


def trace_records(rng, n_records=3, n_gens=4, pop=8, dagger=False):
    """Trace records as README's "File formats" describes them (built here, not by running SR, so that the
    harness does not depend on code being refactored)."""
    ops = ["initial", "elite", "crossover", "mutation"]
    recs = []
    for i in range(n_records):
        X = rng.uniform(-1, 1, (10, 1 + i % 2)).astype(np.float32)
        y = (X[:, 0] + 1).astype(np.float32)
        gens = []
        for g in range(n_gens):
            # made of the record's own primitives, so that consumers (relabeling, examples) get past parsing
            exprs = [TEMPLATES[j].replace("x1", "x1" if i % 2 else "x0")
                     for j in rng.integers(0, len(TEMPLATES), pop)]
            mses = rng.uniform(0, 1, pop).astype(np.float32)
            her = np.where(rng.random((pop, 2)) < 0.3, -1, rng.integers(0, pop, (pop, 2))).astype(np.int32)
            gen = {"generation": g, "population_size": pop, "expressions": exprs, "fitnesses": (1 / (1 + mses)),
                   "mses": mses, "heritages": her, "operators": [ops[j % 4] for j in range(pop)],
                   "best_fitness": float(1 / (1 + mses.min())), "best_mse": float(mses.min()),
                   "best_expression": exprs[int(mses.argmin())]}
            if dagger:
                gen.update(expert_expressions=list(exprs), expert_heritages=her.copy(),
                           expert_operators=gen["operators"][:], expert_fitnesses=gen["fitnesses"].copy())
            gens.append(gen)
        traj = {"generations": gens, "ancestors_of_best": [[0]] * n_gens,
                "best_progression": [g["best_mse"] for g in gens],
                "stats": {"evaluations": 100, "proposals": 120, "wall_time": 0.5}}
        recs.append({"expression_id": i, "index": i, "seed": 7, "target_expression": "(x0 + 1.0)",
                     "final_expression": gens[-1]["best_expression"], "final_mse": gens[-1]["best_mse"],
                     "solved": False, "time": 0.1, "trajectory": traj,
                     "basicsr_params": {"population_size": pop, "num_generations": n_gens},
                     "binary_operators": ["+", "-", "*", "/"], "unary_operators": ["sin", "cos"],
                     "constants": [1.0, 2.0], "num_vars": X.shape[1], "X": X, "y": y,
                     "source": "neural_sr" if dagger else "basic_sr"})
    return recs


def base_files():
    """{name: (kind, raw pickle)}: the shipped expressions files (format 1 as shipped, and format 2),
    small traces and DAgger traces files (format 1 and 2)."""
    from nsr import safe_io

    rng = np.random.default_rng(0)
    meta = {"command": "bench/fuzz_loader.py", "parameters": {}, "package_versions": {"numpy": np.__version__},
            "created": "2026-01-01T00:00:00", "source": "basic_sr", "input_file": "x.pkl.gz", "solved": 0,
            "wall_time": 1.0}
    payloads = {"traces": ("traces", meta, trace_records(rng)),
                "dagger": ("traces", dict(meta, dagger=True, original_source="neural_sr", source="neural_sr"),
                           trace_records(rng, dagger=True))}
    folder = os.path.join(ROOT, "datasets", "expressions")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if name.endswith(".pkl.gz") and os.path.getsize(path) < (1 << 20):  # small ones: mutating is quick
            obj = safe_io.read_gzip_pickle(path)
            payloads[name[:-7]] = ("expressions", obj["metadata"], obj["records"])
    out = {}
    for name, (kind, metadata, records) in payloads.items():
        v1 = {"format": kind, "format_version": 1, "metadata": metadata, "records": records}
        out[name + "-v1"] = (kind, pickle.dumps(v1, protocol=4))
        out[name + "-v2"] = (kind, gzip.decompress(safe_io.dumps(kind, metadata, records)))
    return out


# ----------------------------------------------------------------------------
# structured attacks


class _Reduce:
    """Pickles as ``func(*args)`` (then BUILD with ``state`` if given)."""

    def __init__(self, func, args, state=None):
        self.r = (func, args) if state is None else (func, args, state)

    def __reduce__(self):
        return self.r


def _np_dtype(spec, state):
    return _Reduce(np.dtype, (spec, False, True), state)


def _np_array(dtype, shape, raw, fortran=False):
    return _Reduce(multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, fortran, raw))


def _np_scalar(dtype, raw):
    return _Reduce(multiarray.scalar, (dtype, raw))


class _PidPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Pid) else None


class _Pid:
    def __init__(self, pid):
        self.pid = pid


def _wrap(value, version=1, kind="expressions", where="metadata"):
    """A file of ``kind`` holding ``value`` in its metadata (or as a record's X), pickled as the version does."""
    X = np.ones((3, 1))
    rec = {"id": 0, "X": X if where == "metadata" else value, "y": X[:, 0], "num_vars": 1}
    obj = {"format": kind, "format_version": version, "metadata": {"v": value} if where == "metadata" else {},
           "records": [rec]}
    buf = io.BytesIO()
    _PidPickler(buf, protocol=4).dump(obj)
    return buf.getvalue()


def _raw(ops: bytes, version=1) -> bytes:
    """Hand-written opcodes as a file's metadata value: a valid header, then ``ops`` pushing one value."""
    head = pickle.dumps({"format": "expressions", "format_version": version, "metadata": {"v": None},
                         "records": []}, protocol=4)
    head = head[:2] + head[11:]  # without the FRAME, whose size would no longer fit
    return head.replace(b"\x8c\x01v\x94N", b"\x8c\x01v\x94" + ops, 1)


def attacks(rng: random.Random):
    """({name: callable() -> pickle or gzip bytes}, {the heavy ones}); random variants where useful."""
    import builtins
    import os as _os

    none3 = (None, None, None)

    def deep(n, kind="list"):
        if kind == "list":
            return _raw(b"]" * (n + 1) + b"a" * n)
        if kind == "dict":
            return _raw(b"}" + b"(\x8c\x01k}" * n + b"u" * n)
        if kind == "tuple-key":
            return _raw(b"})" + b"\x85" * n + b"Ns")
        if kind == "tuple-set":
            return _raw(b"\x8f()" + b"\x85" * n + b"\x90")
        return _raw(b"(" * n + b")" + b"t" * n)

    def laughs():
        layer = [0] * 10
        for _ in range(rng.randint(10, 40)):
            layer = [layer] * 10
        return pickle.dumps({"format": "expressions", "format_version": 1, "metadata": {"v": layer},
                             "records": []}, protocol=4)

    def cycle():
        a = {"format": "traces", "format_version": 1, "metadata": {}, "records": []}
        a["records"].append(a)
        return pickle.dumps(a, protocol=4)

    def memo(op):
        i = rng.choice([2 ** 20, 2 ** 26, 2 ** 28, 2 ** 30, 2 ** 31 - 1, 2 ** 32 - 1])
        return _raw(b"N" + (b"r" + struct.pack("<I", i) if op == "r" else b"p%d\n" % i))

    def length(op, size):
        n = rng.choice([2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 40, 2 ** 62, 2 ** 63 - 1])
        fmt = "<I" if size == 4 else "<Q"
        return _raw(op + struct.pack(fmt, n % (1 << (8 * size))) + b"xx")

    def bomb(n_members):
        member = _gz(b"\0" * (64 << 20), 9)  # 64 MB of zeros each, ~64 KB compressed
        head = _gz(pickle.dumps({"format": "expressions", "format_version": 1, "metadata": {},
                                 "records": []}, protocol=4)[:-2] + b"\x8e" + struct.pack("<Q", n_members << 26), 9)
        return head + member * n_members

    a = {
        # NumPy state forgery (the issue and its relatives), format 1
        "segv-object-dtype-flags-0": lambda: _wrap(_np_scalar(_np_dtype("O8", (3, "|", *none3, -1, -1, 0)),
                                                               struct.pack("<Q", 0x4141414141414141))),
        "object-dtype-true-flags": lambda: _wrap(_np_scalar(np.dtype("O"), b"A" * 8)),
        "object-array": lambda: _wrap(np.array([1, None, "x"], dtype=object)),
        "object-array-as-X": lambda: _wrap(np.array([[1.0], [None]], dtype=object), where="X"),
        "object-frombuffer": lambda: _wrap(_Reduce(numeric._frombuffer, (bytearray(8), np.dtype("O"), (1,), "C"))),
        "object-reconstruct-forged": lambda: _wrap(_np_array(_np_dtype("O8", (3, "|", *none3, -1, -1, 0)),
                                                             (1,), b"A" * 8)),
        "structured-object-field": lambda: _wrap(_np_array(np.dtype([("a", "O"), ("b", "f8")]), (1,), b"\0" * 16)),
        "itemsize-2**70": lambda: _wrap(_np_scalar(_np_dtype("V8", (3, "|", *none3, 2 ** 70, 1, 0)), b"x")),
        "forged-flags-f8": lambda: _wrap(_np_array(_np_dtype("f8", (3, "<", *none3, -1, -1, rng.randrange(1, 256))),
                                                   (1,), b"\0" * 8)),
        "forged-elsize-f8": lambda: _wrap(_np_array(_np_dtype("f8", (3, "<", *none3, rng.choice([0, 4, 16, 2 ** 40]),
                                                                     -1, 0)), (1,), b"\0" * 8)),
        "forged-order": lambda: _wrap(_np_array(_np_dtype("f8", (3, rng.choice(["|", "?", "", "<<", 1]), *none3,
                                                                 -1, -1, 0)), (1,), b"\0" * 8)),
        "forged-fields": lambda: _wrap(_np_array(_np_dtype("f8", (3, "<", None, ("a",), {"a": (np.dtype("O"), 0)},
                                                                  -1, -1, 0)), (1,), b"\0" * 8)),
        "dtype-state-v4-metadata": lambda: _wrap(_np_array(_np_dtype("f8", (4, "<", *none3, -1, -1, 0, {"x": 1})),
                                                           (1,), b"\0" * 8)),
        "dtype-state-junk": lambda: _wrap(_np_array(_np_dtype("f8", rng.choice([(3,), (), None, [3], "x", (9,) * 8])),
                                                    (1,), b"\0" * 8)),
        "subarray-dtype": lambda: _wrap(_np_array(np.dtype(("f8", (2,))), (1,), b"\0" * 16)),
        "void-dtype": lambda: _wrap(_np_array(np.dtype("V8"), (1,), b"\0" * 8)),
        "datetime-dtype": lambda: _wrap(np.array(["2020-01-01"], dtype="M8[D]")),
        "str-dtype-too-wide": lambda: _wrap(_np_array(_np_dtype("U99999999", (3, "<", *none3, 399999996, 4, 8)),
                                                      (0,), b"")),
        "huge-shape": lambda: _wrap(_np_array(np.dtype("f8"), (2 ** rng.randint(31, 64),) * 2, b"\0" * 8)),
        "negative-shape": lambda: _wrap(_np_array(np.dtype("f8"), (-rng.randint(1, 2 ** 40),), b"")),
        "short-data": lambda: _wrap(_np_array(np.dtype("f8"), (rng.randint(2, 10 ** 6),), b"\0" * 8)),
        "odd-shape": lambda: _wrap(_np_array(np.dtype("f8"), rng.choice([(1.0,), (True,), [1], ("1",), (None,),
                                                                          (1,) * 70]), b"\0" * 8)),
        "odd-raw": lambda: _wrap(_np_array(np.dtype("f8"), (1,), rng.choice([[1.0], "abcdefgh", None, 8]))),
        "bool-byte-2": lambda: _wrap(_np_array(np.dtype("?"), (2,), bytes([1, rng.randint(2, 255)]))),
        "unicode-past-10ffff": lambda: _wrap(_np_array(np.dtype("<U1"), (1,), b"\xff\xff\xff\xff")),
        "dtype-class": lambda: _wrap(type(np.dtype("f8"))),
        "dtype-class-called": lambda: _wrap(_Reduce(type(np.dtype("f8")), ())),
        "bare-dtype": lambda: _wrap(np.dtype("f8")),
        "ndarray-called": lambda: _wrap(_Reduce(np.ndarray, ((2,),))),
        "matrix": lambda: _wrap(_Reduce(np.matrix, ([[1.0]],))),
        "masked-array": lambda: _wrap(np.ma.masked_array([1.0], mask=[1])),
        # format 2 persistent ids
        "pid-in-v1-file": lambda: _wrap(_Pid(("nd", "<f8", (1,), False, b"\0" * 8)), version=1),
        "pid-wrong-length": lambda: _wrap(_Pid(("nd", "<f8", (1,))), version=2),
        "pid-unknown-tag": lambda: _wrap(_Pid((rng.choice(["xx", "", None, 1]), "<f8", b"")), version=2),
        "pid-not-tuple": lambda: _wrap(_Pid(rng.choice(["nd", b"nd", 1, None, ["nd"], {"nd": 1}])), version=2),
        "pid-bad-dtype": lambda: _wrap(_Pid(("nd", rng.choice(["|O8", "|V8", "<M8[s]", "<U999999999", "|f8", "<b1",
                                                               "f8", "<f8 ", "<U-1", "<S0", "<O", 8, None]),
                                             (1,), False, b"\0" * 8)), version=2),
        "pid-bad-shape": lambda: _wrap(_Pid(("nd", "<f8", rng.choice([(-1,), (2 ** 40,) * 2, [1], (1.0,), None,
                                                                       (1,) * 70, (True,)]), False, b"\0" * 8)),
                                       version=2),
        "pid-bad-scalar": lambda: _wrap(_Pid(("sc", rng.choice(["<f8", "<U2", "|b1"]), rng.choice([b"", b"\2",
                                                                                               b"\xff" * 8]))),
                                        version=2),
        "numpy-in-v2-file": lambda: _wrap(np.ones(2), version=2),
        # code and odd calls
        "os.system": lambda: _wrap(_Reduce(_os.system, ("true",))),
        "eval": lambda: _wrap(_Reduce(builtins.eval, ("1",))),
        "getattr": lambda: _wrap(_Reduce(builtins.getattr, (1, "real"))),
        "__import__": lambda: _wrap(_Reduce(builtins.__import__, ("os",))),
        "subprocess": lambda: _wrap(_Reduce(subprocess.Popen, (["true"],))),
        "global-text": lambda: _raw(b"c" + rng.choice([b"os\nsystem", b"builtins\neval", b"numpy\n__dict__",
                                                       b"numpy.dtypes\nStringDType", b"numpy.dtypes\nFloat64DType",
                                                       b"numpy._core.multiarray\n_reconstruct", b"\xff\n\xfe"])
                                    + b"\n"),
        "inst-obj": lambda: _raw(rng.choice([b"(i__builtin__\nlist\n", b"(cbuiltins\ndict\no", b"(ios\nsystem\n",
                                             b"(cbuiltins\ntuple\n(I1\ntto", b"(c__builtin__\nset\n]o"])),
        "odd-container-calls": lambda: _raw(rng.choice([
            b"c__builtin__\nbytearray\nJ\x00\x00\x00\x40\x85R", b"c__builtin__\nbytearray\nX\x01\x00\x00\x00xX\x06\x00\x00"
            b"\x00utf-16\x86R", b"c__builtin__\ncomplex\nX\x03\x00\x00\x00nan\x85R",
            b"c__builtin__\ncomplex\n\x8a\x10" + b"\xff" * 16 + b"\x85R", b"c__builtin__\ndict\n]K\x01a\x85R",
            b"c__builtin__\nset\n]]a\x85R", b"c__builtin__\nfrozenset\n]}a\x85R", b"c__builtin__\nlist\nK\x01\x85R",
            b"c__builtin__\ntuple\n))\x85\x85R", b"ccollections\nOrderedDict\nN\x85R", b"c__builtin__\nbytes\nK\x09\x85R",
            b"c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R",
            b"ccollections\nOrderedDict\n)R}(\x8c\x01a\x8c\x01bu\x86b",
            b"c__builtin__\ndict\n)\x81", b"c__builtin__\nlist\n)}\x92", b"c__builtin__\ncomplex\n\x8c\x011\x85\x81"])),
        "build-on-containers": lambda: _raw(rng.choice([b"]}b", b"}(\x8c\x01a\x8c\x01bub", b"\x8f}b",
                                                        b"c__builtin__\nlist\nN}\x86b", b"N}b"])),
        # opcode abuse
        "memo-binput": lambda: memo("r"),
        "memo-put": lambda: memo("p"),
        "memo-get-missing": lambda: _raw(b"j" + struct.pack("<I", rng.randrange(2 ** 32))),
        "memo-cycle": lambda: cycle(),
        "length-binbytes": lambda: length(b"B", 4),
        "length-binunicode": lambda: length(b"X", 4),
        "length-binstring": lambda: length(b"T", 4),
        "length-long4": lambda: length(b"\x8b", 4),
        "length-binbytes8": lambda: length(b"\x8e", 8),
        "length-bytearray8": lambda: length(b"\x96", 8),
        "length-binunicode8": lambda: length(b"\x8d", 8),
        "frame-sizes": lambda: b"\x80\x04\x95" + struct.pack("<Q", rng.choice([0, 1, 2 ** 40, 2 ** 63 - 1, 10]))
                               + pickle.dumps({"format": "expressions", "format_version": 1, "metadata": {},
                                               "records": []}, protocol=4)[11:],
        "extension-opcodes": lambda: _raw(rng.choice([b"\x82\x01", b"\x83\x01\x00", b"\x84\x01\x00\x00\x00"])),
        "huge-text-int": lambda: _raw(b"I" + b"9" * rng.choice([5000, 10 ** 6]) + b"\n"),
        "bad-utf8": lambda: _raw(b"X\x02\x00\x00\x00\xed\xa0"),
        "stack-global-non-str": lambda: _raw(b"K\x01K\x02\x93"),
        "next-buffer": lambda: _raw(b"\x97"),
        "persid-text": lambda: _raw(b"Pnd\n"),
        "trailing-after-stop": lambda: pickle.dumps({"format": "expressions", "format_version": 1, "metadata": {},
                                                     "records": []}, protocol=4) + b"N.",
        "deep-list": lambda: deep(rng.choice([300, 10 ** 5, 2 * 10 ** 5])),
        "deep-dict": lambda: deep(rng.choice([300, 10 ** 5]), "dict"),
        "deep-tuple": lambda: deep(rng.choice([300, 10 ** 5]), "tuple"),
        "deep-tuple-dict-key": lambda: deep(rng.choice([10 ** 5, 10 ** 6]), "tuple-key"),
        "deep-tuple-set-member": lambda: deep(rng.choice([10 ** 5, 10 ** 6]), "tuple-set"),
        "billion-laughs": laughs,
        "records-many-refs": lambda: pickle.dumps({"format": "expressions", "format_version": 1, "metadata": {},
                                                   "records": [{"id": 0, "X": np.ones((2, 1)), "y": np.ones(2)}]
                                                   * rng.choice([10, 10 ** 5])}, protocol=4),
    }
    heavy = {"gzip-bomb": lambda: bomb(80)}  # 5 GB of zeros; beyond the default limit
    return a, heavy


# ----------------------------------------------------------------------------
# mutations

OPCODES = bytes(sorted(set(b"(.012NRb}e]l)osuadQ\x81\x85\x86\x87\x88\x89\x8f\x90\x91\x92\x93\x94\x97\x98KhqMJjrG"
                           b"\x95\x8cCU\x8aBXT\x8b\x8d\x8e\x96ILFSVgPpci\x82\x83\x84\x80")))
MAGIC = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2 ** 62, 2 ** 63 - 1,
         2 ** 64 - 1]
ODD_VALUES = [None, 0, -1, 2 ** 64, 1.5, float("nan"), float("inf"), "", "x" * 300, b"x", [], {}, (), [[]],
              {"a": 1}, True, set(), frozenset([1]), OrderedDict(), 1j]


def _odd_value(rng: random.Random):
    arrays = [np.zeros(0), np.zeros((2, 2, 2)), np.array(["a"]), np.array([np.nan]), np.zeros((3, 0)),
              np.ones((1, 11)), np.array(5.0), np.array([1 + 1j]), np.array([True]), np.arange(3, dtype=">i2"),
              np.float32(np.nan), np.int64(2 ** 62), np.str_("x"), np.ones((2, 1), dtype=np.float16),
              np.full((4, 2), -5, dtype=np.int32), np.full((4, 2), 2 ** 31 - 1, dtype=np.int32)]
    return rng.choice(ODD_VALUES + arrays)


def _swap_field(obj, rng):
    """Replace one value somewhere in a (trusted, freshly unpickled) payload with an odd one."""
    node = obj
    for _ in range(rng.randint(1, 6)):
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
            if not isinstance(node[key], (dict, list)) or rng.random() < 0.3:
                node[key] = _odd_value(rng)
                return obj
            node = node[key]
        elif isinstance(node, list) and node:
            i = rng.randrange(len(node))
            if not isinstance(node[i], (dict, list)) or rng.random() < 0.3:
                node[i] = _odd_value(rng)
                return obj
            node = node[i]
        else:
            break
    if isinstance(node, dict):
        node[rng.choice(["id", "X", "y", "num_vars", "expression", "trajectory", "generations"])] = _odd_value(rng)
    return obj


_DTYPE_SPECS = [b"f8", b"f4", b"i4", b"i8", b"b1", b"u1", b"i2", b"f2"]
_FORGED_SPECS = [b"O8", b"V8", b"M8", b"m8", b"c8", b"f2", b"U9", b"S0", b"U0", b"V0", b"b1", b"i1", b"O4"]


def _forge_dtype(raw: bytes, rng: random.Random) -> bytes:
    """Rewrite a dtype descriptor or a piece of a pickled dtype state."""
    b = bytearray(raw)
    choice = rng.random()
    if choice < 0.5:  # a descriptor: 'f4' in format 1, '<f4' in format 2
        hits = [i for spec in _DTYPE_SPECS for i in _find_all(raw, b"\x8c" + bytes([len(spec)]) + spec)]
        hits += [(i, 3) for spec in _DTYPE_SPECS for i in _find_all(raw, b"\x8c\x03<" + spec)]
        if hits:
            hit = rng.choice(hits)
            i, n = hit if isinstance(hit, tuple) else (hit, 2)
            new = rng.choice(_FORGED_SPECS)
            if n == 3:
                new = rng.choice([b"<", b">", b"|", b"="]) + new
            return bytes(b[:i]) + b"\x8c" + bytes([len(new)]) + new + bytes(b[i + 2 + n:])
    elif choice < 0.8:  # the state's byte order
        hits = _find_all(raw, b"\x8c\x01<") + _find_all(raw, b"\x8c\x01|")
        if hits:
            i = rng.choice(hits)
            b[i + 2] = rng.choice(b"<>|=?x")
            return bytes(b)
    hits = _find_all(raw, b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00")  # elsize -1, alignment -1, flags 0
    if hits:
        i = rng.choice(hits)
        field = rng.randrange(3)
        value = rng.choice([0, 1, 8, 63, 255, 2 ** 31 - 1, 16])
        if field < 2:
            b[i + 5 * field + 1:i + 5 * field + 5] = struct.pack("<i", value)
        else:
            b[i + 11] = value & 0xFF
        return bytes(b)
    return _mutate_bytes(raw, rng, "flip")


def _find_all(data: bytes, sub: bytes, limit=2000):
    out, i = [], data.find(sub)
    while i >= 0 and len(out) < limit:
        out.append(i)
        i = data.find(sub, i + 1)
    return out


def _mutate_bytes(raw: bytes, rng: random.Random, op: str) -> bytes:
    b = bytearray(raw)
    n = len(b)
    if op == "flip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(n)] = rng.randrange(256)
    elif op == "bitflip":
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        del b[rng.randrange(n):]
    elif op == "insert_opcode":
        i = rng.randrange(n)
        b[i:i] = bytes([rng.choice(OPCODES)]) + bytes(rng.randrange(256) for _ in range(rng.randint(0, 8)))
    elif op == "replace_opcode":
        b[rng.randrange(n)] = rng.choice(OPCODES)
    elif op == "splice":
        i, j = sorted(rng.randrange(n) for _ in range(2))
        j = min(j, i + rng.randint(1, 64))
        if rng.random() < 0.5:
            del b[i:j]
        else:
            k = rng.randrange(n)
            b[k:k] = b[i:j]
    elif op == "magic":
        size = rng.choice([1, 2, 4, 8])
        i = rng.randrange(max(1, n - size))
        v = rng.choice(MAGIC) % (1 << (8 * size))
        b[i:i + size] = v.to_bytes(size, "little")
    return bytes(b)


PICKLE_OPS = ("flip", "bitflip", "truncate", "insert_opcode", "replace_opcode", "splice", "magic", "dtype", "field")
GZIP_OPS = ("gzip_flip", "gzip_truncate")


def mutate(base_raw: bytes, version: int, rng: random.Random, op: str) -> bytes:
    """One mutated file (gzip bytes) from a base pickle."""
    if op == "field":
        from nsr import safe_io

        obj = _swap_field(safe_io.loads(base_raw), rng)
        if version == 2:
            buf = io.BytesIO()
            p = pickle.Pickler(buf, protocol=4)
            p.persistent_id = safe_io._persistent_id  # format 2's own encoding, without the writer's checks
            try:
                p.dump(obj)
                return _gz(buf.getvalue())
            except Exception:  # noqa: BLE001 - the value cannot be format 2: write it as format 1
                pass
        return _gz(pickle.dumps(obj, protocol=4))
    if op == "dtype":
        return _gz(_forge_dtype(base_raw, rng))
    if op in GZIP_OPS:
        gz = _gz(base_raw)
        return gz[:rng.randrange(len(gz))] if op == "gzip_truncate" else _mutate_bytes(gz, rng, "flip")
    return _gz(_mutate_bytes(base_raw, rng, op))


def generate(n, seed, heavy=True):
    """Yield (input class, base or '', kind, gzip bytes): ``n`` inputs in all, reproducible from ``seed``."""
    bases = base_files()
    names = sorted(bases)
    attack_fns, heavy_fns = attacks(random.Random(seed))
    attack_names = sorted(attack_fns)
    count = 0
    if heavy:
        for name, fn in sorted(heavy_fns.items()):
            if count < n:
                count += 1
                yield "attack:" + name, "", "expressions", fn()
    for i in range(count, n):
        rng = random.Random(f"{seed}-{i}")
        if rng.random() < 0.1:
            name = rng.choice(attack_names)
            fns, _ = attacks(rng)
            raw = fns[name]()
            kind = "traces" if b"traces" in raw[:200] else "expressions"
            yield "attack:" + name, "", kind, raw if raw[:2] == b"\x1f\x8b" else _gz(raw)
        else:
            base = rng.choice(names)
            kind, raw = bases[base]
            op = rng.choice(PICKLE_OPS + GZIP_OPS)
            yield op, base, kind, mutate(raw, 2 if base.endswith("v2") else 1, rng, op)


# ----------------------------------------------------------------------------
# the pool


class _Worker:
    def __init__(self, env):
        self.err = tempfile.TemporaryFile()
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], cwd=ROOT, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        self.buf = b""
        self.job = None
        self.deadline = None
        hello = json.loads(self.p.stdout.readline() or "{}")
        self.loaders, self.folder = hello.get("loaders", {}), hello.get("folder")

    def send(self, job, timeout):
        cls, base, kind, data = job
        self.job, self.deadline = job, time.monotonic() + timeout
        self.p.stdin.write(struct.pack("<BI", KINDS.index(kind), len(data)) + data)
        self.p.stdin.flush()

    def stderr_tail(self):
        self.err.seek(0)
        return self.err.read()[-4000:].decode("utf-8", "replace")

    def stop(self):
        if self.p.poll() is None and self.job is None:
            self.p.stdin.close()  # an idle worker exits on end of input, removing its folder
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.err.close()
        if self.folder:  # a killed worker leaves it behind
            shutil.rmtree(self.folder, ignore_errors=True)


def run(inputs=100_000, seed=0, workers=2, timeout=10.0, findings=None, heavy=True, progress=False, env=None):
    """Load ``inputs`` generated inputs in a pool of worker processes; return the summary dict."""
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONPATH", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    by_class = defaultdict(Counter)
    by_base = defaultdict(Counter)
    totals = Counter()
    found, slowest, restarts = [], [], 0
    pool = [_Worker(env) for _ in range(workers)]
    loaders = pool[0].loaders
    sel = selectors.DefaultSelector()
    for w in pool:
        sel.register(w.p.stdout, selectors.EVENT_READ, w)
    jobs = generate(inputs, seed, heavy)
    start = time.perf_counter()
    done = 0

    def record(w, res):
        nonlocal done
        cls, base, kind, data = w.job
        outcome = res["outcome"]
        by_class[cls][outcome] += 1
        if base:
            by_base[base][outcome] += 1
        totals[outcome] += 1
        done += 1
        if "s" in res:
            slowest.append((res["s"], cls, base))
            slowest.sort(reverse=True)
            del slowest[5:]
        if outcome not in FINE:
            entry = {"n": done, "class": cls, "base": base, "kind": kind, **{k: v for k, v in res.items() if k != "s"}}
            if findings:
                os.makedirs(findings, exist_ok=True)
                name = f"{len(found):04d}-{outcome}-{cls.replace(':', '-')}"
                with open(os.path.join(findings, name + ".pkl.gz"), "wb") as f:
                    f.write(data)
                with open(os.path.join(findings, name + ".json"), "w") as f:
                    json.dump(entry, f, indent=1)
                entry["file"] = name + ".pkl.gz"
            found.append(entry)
        w.job = None
        if progress and done % 5000 == 0:
            el = time.perf_counter() - start
            print(f"{done} inputs, {done / el:.0f}/s, findings {len(found)}", file=sys.stderr, flush=True)

    def replace(w, outcome, extra):
        nonlocal restarts
        res = {"outcome": outcome, **extra}
        sel.unregister(w.p.stdout)
        w.stop()
        record(w, res)
        restarts += 1
        nw = _Worker(env)
        sel.register(nw.p.stdout, selectors.EVENT_READ, nw)
        pool[pool.index(w)] = nw
        return nw

    exhausted = False
    try:
        while True:
            for w in list(pool):
                if w.job is None and not exhausted:
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    try:
                        w.send(job, HEAVY_TIMEOUT if job[0] == "attack:gzip-bomb" else timeout)
                    except (BrokenPipeError, OSError):
                        w.job = job
                        replace(w, "crash", {"signal": w.p.poll(), "stderr": w.stderr_tail()})
            busy = [w for w in pool if w.job is not None]
            if not busy:
                break
            wait = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            for key, _ in sel.select(timeout=wait):
                w = key.data
                chunk = os.read(w.p.stdout.fileno(), 1 << 16)
                if not chunk:  # died
                    code = w.p.wait()
                    replace(w, "crash", {"returncode": code, "stderr": w.stderr_tail()})
                    continue
                w.buf += chunk
                while b"\n" in w.buf and w.job is not None:
                    line, w.buf = w.buf.split(b"\n", 1)
                    record(w, json.loads(line))
            now = time.monotonic()
            for w in list(pool):
                if w.job is not None and now > w.deadline:
                    replace(w, "hang", {"timeout": timeout})
    finally:
        for w in pool:
            w.stop()
    elapsed = time.perf_counter() - start
    return {"inputs": done, "seed": seed, "workers": workers, "timeout": timeout, "elapsed_s": round(elapsed, 1),
            "inputs_per_s": round(done / elapsed, 1), "loaders": loaders, "totals": dict(totals),
            "findings": len(found), "worker_restarts": restarts,
            "by_class": {k: dict(v) for k, v in sorted(by_class.items())},
            "by_base": {k: dict(v) for k, v in sorted(by_base.items())},
            "slowest": [{"s": s, "class": c, "base": b} for s, c, b in slowest], "finding_list": found[:200]}


# ----------------------------------------------------------------------------
# optional: coverage-guided fuzzing of safe_io.loads in-process


def atheris_main(runs, seed):
    import atheris

    with atheris.instrument_imports():
        from nsr import safe_io
    corpus = tempfile.mkdtemp(prefix="fuzz-corpus-")
    small = {"format": "traces", "format_version": 1, "metadata": {"a": np.float32(1)},
             "records": trace_records(np.random.default_rng(1), 1, 1, 3)}
    seeds = [pickle.dumps(small, protocol=p) for p in (2, 4, 5)]
    seeds.append(gzip.decompress(safe_io.dumps("traces", small["metadata"], small["records"])))
    for i, s in enumerate(seeds):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
            f.write(s)

    def one(data):
        try:
            safe_io.loads(data)
        except safe_io.InputError:
            pass

    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-seed={seed}", "-max_len=65536", "-rss_limit_mb=8192", corpus],
                  one)
    atheris.Fuzz()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before an input counts as a hang")
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--findings", help="folder for the inputs of findings")
    ap.add_argument("--no_heavy", action="store_true", help="skip the gzip bomb (5 GB of zeros, ~4 GB of memory)")
    ap.add_argument("--atheris", type=int, metavar="RUNS", help="coverage-guided fuzzing of safe_io.loads instead")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main()
    if args.atheris:
        return atheris_main(args.atheris, args.seed)
    summary = run(args.inputs, args.seed, args.workers, args.timeout, args.findings, not args.no_heavy, progress=True)
    text = json.dumps(summary, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("by_class", "by_base", "finding_list")}, indent=1))
    print_table(summary)
    return 1 if summary["findings"] else 0


def print_table(summary):
    outcomes = sorted({o for v in summary["by_class"].values() for o in v}, key=lambda o: (o not in FINE, o))
    width = max(len(k) for k in summary["by_class"]) + 2
    print("class".ljust(width) + "".join(o.rjust(20) for o in outcomes))
    for cls, counts in summary["by_class"].items():
        print(cls.ljust(width) + "".join(str(counts.get(o, 0)).rjust(20) for o in outcomes))
    print("TOTAL".ljust(width) + "".join(str(summary["totals"].get(o, 0)).rjust(20) for o in outcomes))


if __name__ == "__main__":
    sys.exit(main())
