"""Trace files -> supervised examples for the model.

A *state* is one generation of one problem: the prompt (context + population
with quantised errors, see :mod:`nsr.tokenizer`). Its *targets* are what the
expert made next:

* expert traces: the children of generation g+1 (the elite copy excluded);
* DAgger traces: the expert's labels for the state the model visited
  (``expert_expressions``), so states come from the model and targets from
  the expert.

Target selection (``--targets``): ``all`` children; ``ancestors``, only
children the final best descends from (``ancestors_of_best``; for DAgger
labels, which are not part of the rollout, this falls back to ``all``);
``improved``, only children fitter than all their parents.

Modes: ``one_step`` (each target is one child, ``tokens <eos>``) or
``autoregressive`` (one target per state: the whole next population
``c1 <sep> c2 ... <eos>``; needs ``--targets all``).

Problems, never states, are split between train and validation: a problem's
side is a hash of its target expression, so it is the same in every file.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from . import safe_io
from .expressions import VARIABLES, ExpressionError, parse_cached
from .prompt import StateEncoder, encode_target, rank_members
from .safe_io import InputError
from .tokenizer import NV_TOKENS, Vocab
from .traces import load_traces, parents, record_config

TARGET_MODES = ("all", "ancestors", "improved")
MODES = ("one_step", "autoregressive")


@dataclass
class Examples:
    """Flat arrays: prompts and targets as concatenated int16 token ids with offsets."""

    prompts: list = field(default_factory=list)
    targets: list = field(default_factory=list)  # per state: list of target id arrays
    problems: list = field(default_factory=list)  # per state: problem key
    weights: list = field(default_factory=list)  # per state: relative sampling weight

    def add(self, prompt, targets, problem, weight=1.0):
        self.prompts.append(np.asarray(prompt, dtype=np.int16))
        self.targets.append([np.asarray(t, dtype=np.int16) for t in targets])
        self.problems.append(problem)
        self.weights.append(float(weight))

    def __len__(self):
        return len(self.prompts)

    @property
    def n_targets(self):
        return sum(len(t) for t in self.targets)

    @property
    def n_tokens(self):
        return sum(len(p) for p in self.prompts) + sum(len(x) for ts in self.targets for x in ts)

    def to_record(self, split):
        p_off = np.cumsum([0] + [len(p) for p in self.prompts]).astype(np.int64)
        flat_t = [t for ts in self.targets for t in ts]
        t_off = np.cumsum([0] + [len(t) for t in flat_t]).astype(np.int64)
        t_state = np.repeat(np.arange(len(self.targets)), [len(ts) for ts in self.targets]).astype(np.int64)
        return {
            "split": split,
            "prompts": np.concatenate(self.prompts) if self.prompts else np.zeros(0, np.int16),
            "prompt_offsets": p_off,
            "targets": np.concatenate(flat_t) if flat_t else np.zeros(0, np.int16),
            "target_offsets": t_off,
            "target_state": t_state,
            "problems": list(self.problems),
            "weights": np.asarray(self.weights, dtype=np.float32),
        }

    @classmethod
    def from_record(cls, r):
        ex = cls()
        po, to = r["prompt_offsets"], r["target_offsets"]
        ex.prompts = [r["prompts"][po[i]:po[i + 1]] for i in range(len(po) - 1)]
        ex.targets = [[] for _ in ex.prompts]
        for j, s in enumerate(r["target_state"].tolist()):
            ex.targets[s].append(r["targets"][to[j]:to[j + 1]])
        ex.problems = list(r["problems"])
        ex.weights = r["weights"].tolist() if "weights" in r else [1.0] * len(ex.prompts)
        return ex

    def extend(self, other, weight=1.0):
        self.prompts += other.prompts
        self.targets += other.targets
        self.problems += other.problems
        self.weights += [w * weight for w in other.weights]


def is_validation(problem_key: str, val_fraction: float) -> bool:
    h = int(hashlib.sha256(problem_key.encode()).hexdigest()[:8], 16)
    return (h % 10000) < val_fraction * 10000


def _parse(text):
    try:
        return parse_cached(text)
    except (ExpressionError, TypeError) as e:
        raise InputError(f"unparseable expression in trace: {e}") from None


def state_prompt(encoder: StateEncoder, prims, gen, generation, scale, parse_fn, max_members, autoregressive):
    """Prompt ids of a recorded state: its members ranked by their text, encoded like a live population."""
    exprs, mses = gen["expressions"], gen["mses"]
    shown = rank_members(gen["fitnesses"], exprs, max_members)
    toks = [parse_fn(exprs[i]) for i in shown]
    codes = np.zeros((len(toks), max((len(t) for t in toks), default=1)), dtype=np.int16)
    try:
        for k, t in enumerate(toks):
            codes[k, : len(t)] = prims.encode(t)
    except ExpressionError as e:
        raise InputError(f"recorded member outside the record's primitives: {e}") from None
    return encoder.encode_members(prims, generation, codes, [len(t) for t in toks],
                                  np.asarray(mses, dtype=np.float64)[shown], scale, autoregressive)


def _select(next_gen, prev_gen, ancestors, mode, expert_labels):
    """Indices of the targets to keep (elite copies never)."""
    if expert_labels:
        ops = next_gen["expert_operators"]
        idx = [i for i in range(len(ops)) if ops[i] != "elite"]
        if mode == "improved":
            fit = next_gen.get("expert_fitnesses")
            if fit is None:
                raise InputError("DAgger trace lacks expert_fitnesses; --targets improved needs them")
            pf = np.asarray(prev_gen["fitnesses"], dtype=np.float64)
            her = next_gen["expert_heritages"]
            idx = [i for i in idx if parents(her[i]) and fit[i] > max(pf[h] for h in parents(her[i]))]
        return idx
    ops = next_gen["operators"]
    idx = [i for i in range(len(ops)) if ops[i] != "elite"]
    if mode == "ancestors":
        keep = set(ancestors)
        idx = [i for i in idx if i in keep]
    elif mode == "improved":
        pf = np.asarray(prev_gen["fitnesses"], dtype=np.float64)
        nf = np.asarray(next_gen["fitnesses"], dtype=np.float64)
        her = next_gen["heritages"]
        idx = [i for i in idx if parents(her[i]) and nf[i] > max(pf[h] for h in parents(her[i]))]
    return idx


def convert_record(record, vocab: Vocab, mode="one_step", targets="all", max_members=32, parse_fn=None,
                   source_name="", encoder: StateEncoder = None):
    """Yield (prompt ids, [target ids], problem key) for every state of one trace record."""
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if targets not in TARGET_MODES:
        raise InputError(f"unknown target selection {targets!r} (choose from {', '.join(TARGET_MODES)})")
    if mode == "autoregressive" and targets != "all":
        raise InputError("autoregressive mode predicts whole populations: use --targets all")
    where = f"{source_name}: record {record.get('expression_id')}: "
    try:
        prims = record_config(record, where).primitives(np.asarray(record["X"]).shape[1])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{where}bad record ({type(e).__name__}: {str(e)[:100]})") from None
    encoder = encoder or StateEncoder(vocab)
    nv, ops, consts = prims.n_vars, list(prims.operators), list(prims.constant_leaves)
    try:
        vocab.check_supports(nv, ops, consts)
    except ValueError as e:
        raise InputError(f"{where}{e}") from None
    # the model reads and writes skeletons: fitted constants are C (the fitting fills in the values)
    base_parse = parse_fn or _parse
    parse_fn = (lambda text: prims.skeleton(base_parse(text))) if prims.fit else base_parse
    y = np.asarray(record["y"], dtype=np.float64)
    var = float(np.var(y))
    scale = var if var > 1e-300 else 1.0
    key = str(record.get("target_expression") or f"{source_name}:{record.get('expression_id')}")
    traj = record["trajectory"]
    gens = traj["generations"]
    dagger = bool(record.get("dagger")) or (gens and "expert_expressions" in gens[0])
    ancestors = traj.get("ancestors_of_best") or [[] for _ in gens]
    last = len(gens) if dagger else len(gens) - 1
    for g in range(last):
        state = gens[g]
        label_gen = state if dagger else gens[g + 1]
        if dagger and "expert_expressions" not in state:
            raise InputError(f"{source_name}: record {record.get('expression_id')} generation {g} lacks expert labels")
        sel = _select(label_gen, state, ancestors[g + 1] if not dagger and g + 1 < len(ancestors) else [],
                      "all" if (dagger and targets == "ancestors") else targets, dagger)
        if not sel:
            continue
        prompt = state_prompt(encoder, prims, state, int(state.get("generation", g)), scale, parse_fn, max_members,
                              mode == "autoregressive").tolist()
        exprs = label_gen["expert_expressions"] if dagger else label_gen["expressions"]
        yield prompt, encode_target(vocab, [parse_fn(exprs[i]) for i in sel], mode == "autoregressive"), key


def convert_files(paths, vocab=None, mode="one_step", targets="all", max_members=32, val_fraction=0.05,
                  progress=None, weights=None):
    """(train Examples, validation Examples, stats) from trace files (expert and/or DAgger).

    ``weights`` (one per file) scale how often each file's states are sampled in training."""
    vocab = vocab or Vocab()
    weights = list(weights) if weights else [1.0] * len(paths)
    if len(weights) != len(paths):
        raise InputError(f"{len(weights)} weights for {len(paths)} trace files")
    train, val = Examples(), Examples()
    stats = {"files": [], "records": 0, "states": 0}
    for path, w in zip(paths, weights):
        tr, va, info = _convert_file(path, vocab, mode, targets, max_members, val_fraction, progress)
        train.extend(tr, w)
        val.extend(va, w)
        stats["records"] += info["records"]
        stats["files"].append(info)
    stats["states"] = len(train) + len(val)
    if len(train) == 0:
        raise InputError("the training set is empty: no states with targets in " + ", ".join(paths))
    return train, val, stats


# One trace file's examples (weight 1), kept for the life of the process: the DAgger loop fine-tunes on the same
# expert traces every iteration and again for its control, and converting them is minutes of CPU each time.
# The key holds the file's size and modification time, so a rewritten file is converted afresh.
_CONVERTED: dict = {}


def _convert_file(path, vocab, mode, targets, max_members, val_fraction, progress=None):
    try:
        st = os.stat(path)
    except OSError:
        load_traces(path)  # the safe loader's one-line error for a missing or unreadable file
        raise
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, tuple(vocab.tokens), mode, targets, max_members,
           val_fraction)
    if key not in _CONVERTED:
        obj = load_traces(path)
        train, val = Examples(), Examples()
        encoder = StateEncoder(vocab)
        for r in obj["records"]:
            for prompt, tgts, k in convert_record(r, vocab, mode, targets, max_members, _parse,
                                                  os.path.basename(path), encoder):
                (val if is_validation(k, val_fraction) else train).add(prompt, tgts, k)
            if progress:
                progress(1)
        info = {"path": os.path.abspath(path), "records": len(obj["records"]), "states": len(train) + len(val),
                "source": obj["metadata"].get("source"), "dagger": bool(obj["metadata"].get("dagger"))}
        _CONVERTED[key] = (train, val, info)
    elif progress:
        progress(_CONVERTED[key][2]["records"])
    train, val, info = _CONVERTED[key]
    return train, val, dict(info)


def save_examples(path, train: Examples, val: Examples, metadata: dict):
    safe_io.save(path, "examples", metadata, [train.to_record("train"), val.to_record("val")])


def validate_examples(obj, path):
    recs = obj["records"]
    splits = {r.get("split") for r in recs if isinstance(r, dict)}
    if splits != {"train", "val"}:
        raise InputError(f"{path}: expected a train and a val split, found {sorted(map(str, splits))}")
    for r in recs:
        for k in ("prompts", "prompt_offsets", "targets", "target_offsets", "target_state"):
            if not isinstance(r.get(k), np.ndarray):
                raise InputError(f"{path}: split {r['split']} lacks array {k!r}")


def load_examples(path):
    """(train, val, metadata) from an examples file written by prepare_data.py."""
    obj = safe_io.load(path, "examples", validate_examples)
    by = {r["split"]: Examples.from_record(r) for r in obj["records"]}
    return by["train"], by["val"], obj["metadata"]


# ----------------------------------------------------------------------------
# batches


def pack_batch(prompts, targets_per_state, pad_id):
    """Rows [prompt][t1][t2]... with segment ids, positions and label indices (numpy)."""
    lengths = [len(p) + sum(len(t) for t in ts) for p, ts in zip(prompts, targets_per_state)]
    B, L = len(prompts), max(lengths)
    ids = np.full((B, L), pad_id, dtype=np.int64)
    seg = np.full((B, L), -1, dtype=np.int64)
    pos = np.zeros((B, L), dtype=np.int64)
    rows, at, labels = [], [], []
    for b, (p, ts) in enumerate(zip(prompts, targets_per_state)):
        T = len(p)
        ids[b, :T] = p
        seg[b, :T] = 0
        pos[b, :T] = np.arange(T)
        o = T
        for j, t in enumerate(ts, start=1):
            n = len(t)
            ids[b, o:o + n] = t
            seg[b, o:o + n] = j
            pos[b, o:o + n] = T + np.arange(n)
            # token k of the child is predicted at the previous position: the prompt's last for k = 0
            rows += [b] * n
            at += [T - 1] + list(range(o, o + n - 1))
            labels += list(t)
            o += n
    return ids, pos, seg, np.array(rows), np.array(at), np.array(labels, dtype=np.int64)


class VariableRenamer:
    """Shows a state as if its problem had m >= n variables, its own n renamed to a random n of x0..x(m-1), the
    same way in the prompt (its ``<nv>`` token included) and in every target.

    Why: the training problems have 1-3 variables, and a model trained on them alone drops x3 and above from its
    children at once (on Feynman's 4-9-variable equations, 4% of those variables were left in `dagger_v2`'s last
    generation, 96% in the expert's: BENCHMARKS.md), so it cannot solve them whatever it learned about their
    structure. Renamed states teach it that any variable shown may be used; training states from many-variable
    problems did that better (the shipped `dagger` keeps 92% without renaming), so it is off by default."""

    def __init__(self, vocab: Vocab):
        self.var_ids = np.array([vocab.ids[v] for v in VARIABLES if v in vocab.ids], dtype=np.int64)
        self.nv_ids = np.array([vocab.ids[t] for t in NV_TOKENS[:len(self.var_ids)]], dtype=np.int64)
        self.n_of = {int(t): k + 1 for k, t in enumerate(self.nv_ids)}
        self.identity = np.arange(len(vocab), dtype=np.int16)

    def __call__(self, prompt, targets, rng: np.random.Generator):
        n = self.n_of[int(prompt[1])]  # the header is <bos> <nvN> ... (nsr.prompt.header_ids)
        m = int(rng.integers(n, len(self.var_ids) + 1))
        table = self.identity.copy()
        table[self.var_ids[:n]] = self.var_ids[rng.choice(m, size=n, replace=False)]
        table[self.nv_ids[n - 1]] = self.nv_ids[m - 1]
        return table[prompt], [table[t] for t in targets]


class BatchSampler:
    """Random states, up to ``children`` random targets each, from one explicit generator; with ``renamer``,
    each state is shown renamed (:class:`VariableRenamer`) with probability ``rename``."""

    def __init__(self, examples: Examples, batch_size, children, rng: np.random.Generator,
                 renamer: VariableRenamer = None, rename: float = 0.0):
        self.ex, self.batch_size, self.children, self.rng = examples, batch_size, children, rng
        self.renamer, self.rename = renamer, rename if renamer is not None else 0.0
        w = np.asarray(examples.weights, dtype=np.float64)
        self.p = None if len(w) == 0 or np.all(w == w[0]) else w / w.sum()

    def sample(self):
        ex, rng = self.ex, self.rng
        if self.p is None:
            idx = rng.integers(0, len(ex), size=self.batch_size)
        else:
            idx = rng.choice(len(ex), size=self.batch_size, p=self.p)
        prompts, tgts = [], []
        for i in idx.tolist():
            ts = ex.targets[i]
            if len(ts) > self.children:
                pick = rng.choice(len(ts), size=self.children, replace=False)
                ts = [ts[k] for k in sorted(pick.tolist())]
            prompt = ex.prompts[i]
            if self.rename and rng.random() < self.rename:
                prompt, ts = self.renamer(prompt, ts, rng)
            prompts.append(prompt)
            tgts.append(ts)
        return prompts, tgts

    def iterate_all(self):
        """Every state once, every target, in order (deterministic validation)."""
        ex = self.ex
        for s in range(0, len(ex), self.batch_size):
            idx = range(s, min(s + self.batch_size, len(ex)))
            yield [ex.prompts[i] for i in idx], [ex.targets[i] for i in idx]
