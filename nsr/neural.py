"""The neural proposer: a checkpoint samples children for many population states at once.

One model call per generation serves every problem in the batch: all prompts
are prefilled together (each prompt once), then all children of a prompt are
decoded in that prompt's row, step by step, each child attending to the
prompt and to itself only (:func:`~nsr.model.owner_mask`), under
:class:`~nsr.decoding.GrammarMask`. Problems whose children
are all finished are dropped from the batch as decoding goes on.

Heritage of a neural child (documented in README): the model does not say
which members it used, so parents are inferred: the first parent is the
population member (best fitness first) holding the child's largest subtree
found in the population; the second, if any, holds the largest subtree of
size >= 2 outside that one, from a different member. A child sharing no
subtree with the population has no parents.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from . import kernels
from .config import SamplingConfig
from .decoding import GrammarMask, sample_from_logits
from .evolution import NEURAL, Problem, Proposal
from .expressions import FIT_TOKEN, is_valid, subtrees
from .model import DUMMY, NOBODY, PROMPT, load_checkpoint, owner_mask, prefill, run
from .prompt import encode_prompt, error_token, rank_members
from .safe_io import InputError


def infer_parents(child: tuple, member_subtrees: list) -> list:
    """Up to two parent indices (see module docstring). ``member_subtrees`` is
    [(population index, set of subtree tuples)] in best-first order."""
    spans = sorted(subtrees(child), key=lambda se: (se[0] - se[1], se[0]))
    first = None
    for s, e in spans:
        sub = child[s:e]
        for idx, subs in member_subtrees:
            if sub in subs:
                first = (idx, s, e)
                break
        if first:
            break
    if first is None:
        return []
    p1, s1, e1 = first
    for s, e in spans:
        if e - s < 2 or (s >= s1 and e <= e1) or (s <= s1 and e >= e1):
            continue
        sub = child[s:e]
        for idx, subs in member_subtrees:
            if idx != p1 and sub in subs:
                return [p1, idx]
    return [p1]


def warm_start(child: tuple, values, members: list, member_values):
    """Start a proposed child's fitted constants from a member's: each ``C`` inside the largest subtree of
    the child that some member holds (best member first) takes that member's value at the same place; the
    rest keep their starting value."""
    todo = {i for i, t in enumerate(child) if t == FIT_TOKEN}
    for s, e in sorted(subtrees(child), key=lambda se: (se[0] - se[1], se[0])):
        inside = [i for i in todo if s <= i < e]
        if not inside:
            continue
        sub = child[s:e]
        for idx, toks in members:
            at = _find(toks, sub)
            if at >= 0:
                for i in inside:
                    values[i] = member_values[idx, at + i - s]
                todo.difference_update(inside)
                break
        if not todo:
            return


def _find(seq: tuple, sub: tuple) -> int:
    """Start of ``sub`` in ``seq`` as a whole subtree (prefix notation: a matching slice is one), or -1."""
    n = len(sub)
    for s in range(len(seq) - n + 1):
        if seq[s:s + n] == sub:
            return s
    return -1


class NeuralProposer:
    """Samples children from a checkpoint (loaded lazily, once, and shared by every call)."""

    def __init__(self, sampling: SamplingConfig):
        if sampling.checkpoint is None:
            raise InputError("neural SR needs a checkpoint")
        self.sampling = sampling
        self._ck = None
        self.stats = {"calls": 0, "model_time": 0.0, "proposals": 0, "well_formed": 0, "rows": 0}

    # -- loading ---------------------------------------------------------------
    def load(self):
        """The loaded checkpoint (loads and checks it on first use)."""
        if self._ck is None:
            s = self.sampling
            self._ck = load_checkpoint(s.checkpoint, s.device, s.dtype,
                                       expect_mode="autoregressive" if s.autoregressive else None)
        return self._ck

    @property
    def autoregressive(self) -> bool:
        return self.load().mode == "autoregressive"

    def check(self, problems: Sequence[Problem]):
        """Refuse problems the checkpoint's vocabulary cannot express."""
        vocab = self.load().vocab
        for p in problems:
            prims = p.primitives
            try:
                vocab.check_supports(prims.n_vars, prims.operators, prims.constant_leaves)
            except ValueError as e:
                raise InputError(f"problem {p.problem_id}: {e}") from None

    # -- prompts -----------------------------------------------------------------
    def members(self, p: Problem):
        """The members shown in the prompt: [(population index, skeleton tokens)] (see :mod:`nsr.prompt`).

        The model sees skeletons (``C`` for each fitted constant) with their errors: the values are the
        fitting's job, and the error token already says how well the fitted skeleton does."""
        hashes = kernels.hash_rows(p.codes, p.lengths).tolist()
        return [(i, p.skeleton(i)) for i in rank_members(p.fitness, hashes, self.load().prompt.max_members)]

    def prompt(self, p: Problem, members) -> list:
        prims = p.primitives
        with np.errstate(over="ignore"):  # float32, as traces record it
            pairs = [(error_token(float(np.float32(p.mse[i])), p.scale), toks) for i, toks in members]
        return encode_prompt(self.load().vocab, prims.n_vars, prims.operators, prims.constant_leaves,
                             p.generation, pairs, autoregressive=self.autoregressive)

    # -- sampling ----------------------------------------------------------------
    def propose(self, problems: Sequence[Problem], n_children) -> list:
        ck = self.load()
        counts = list(n_children) if isinstance(n_children, (list, tuple)) else [int(n_children)] * len(problems)
        max_size = problems[0].config.max_size if problems else 0
        members = [self.members(p) for p in problems]
        prompts = [self.prompt(p, m) for p, m in zip(problems, members)]
        allowed = [ck.vocab.allowed_mask(p.primitives.operators, p.primitives.n_vars,
                                         p.primitives.constant_leaves) for p in problems]
        steps = max_size + 1
        if self.autoregressive:
            uniforms = [p.rng.random(c * steps) for p, c in zip(problems, counts)]
        else:
            uniforms = [p.rng.random((c, steps)) for p, c in zip(problems, counts)]
        t0 = time.perf_counter()
        with torch.inference_mode():
            if self.autoregressive:
                seqs = self._sample_autoregressive(prompts, counts, allowed, max_size, uniforms)
            else:
                seqs = self._sample_one_step(prompts, counts, allowed, max_size, uniforms)
        if ck.device.type == "cuda":
            torch.cuda.synchronize(ck.device)
        model_time = time.perf_counter() - t0
        self.stats["calls"] += 1
        self.stats["model_time"] += model_time
        total = max(sum(counts), 1)
        return [self._to_proposal(p, s, m, c, model_time * c / total)
                for p, s, m, c in zip(problems, seqs, members, counts)]

    def _sample_step(self, logits, proc, U, rows, t, out):
        """Sample one token for each live row under the grammar mask; record it."""
        s = self.sampling
        lg = logits.float().masked_fill(~proc.mask(), float("-inf"))
        tok = sample_from_logits(lg, U[rows, t], s.temperature, s.top_k, s.top_p)
        out[rows.cpu(), t] = tok.cpu()
        proc.update(tok)
        return tok

    def _sample_one_step(self, prompts, counts, allowed, max_size, uniforms):
        """All children of a prompt decode in the prompt's row, sharing its cache (tree
        attention, :func:`~nsr.model.owner_mask`); each step computes only the children
        still being written, and rows whose children are all done leave the batch."""
        ck = self.load()
        live = [i for i, c in enumerate(counts) if c > 0]
        steps = max_size + 1
        result = [np.zeros((0, steps), dtype=np.int64) for _ in prompts]
        if not live:
            return result
        dev, V = ck.device, len(ck.vocab)
        C = max(counts[i] for i in live)
        cache, last, pmask, plen = prefill(ck.model, [prompts[i] for i in live], ck.vocab.pad, dev)
        B = len(live)
        allow = torch.from_numpy(np.stack([allowed[i] for i in live])).to(dev).repeat_interleave(C, 0)
        proc = GrammarMask(ck.vocab, allow, max_size, None, self.sampling.constrained)
        real = torch.zeros((B, C), dtype=torch.bool)
        U = torch.zeros((B * C, steps))
        for b, i in enumerate(live):
            real[b, : counts[i]] = True
            U[b * C: b * C + counts[i]] = torch.from_numpy(uniforms[i]).float()
        proc.finished = ~real.reshape(-1).to(dev)  # padding slots of problems with fewer children
        self.stats["rows"] += int(real.sum())
        out = torch.full((B * C, steps), ck.vocab.pad, dtype=torch.long)
        U = U.to(dev)
        problems_alive = torch.arange(B, device=dev)
        owner = torch.where(pmask.bool(), PROMPT, NOBODY)
        children = torch.arange(C, device=dev)
        logits = last.repeat_interleave(C, 0)
        for t in range(steps):
            rows = (problems_alive[:, None] * C + children[None, :]).reshape(-1)
            tok = self._sample_step(logits, proc, U, rows, t, out)
            writing = ~proc.finished.view(-1, C)
            busy = writing.any(1)
            n_busy = int(busy.sum())
            if n_busy == 0 or t == steps - 1:
                break
            if n_busy < len(problems_alive):  # drop problems whose children are all finished
                keep = busy.nonzero()[:, 0]
                cache.reorder_cache(keep)
                plen, owner, problems_alive = plen[keep], owner[keep], problems_alive[keep]
                proc.select((keep[:, None] * C + children[None, :]).reshape(-1))
                tok, writing = tok.view(-1, C)[keep].reshape(-1), writing[keep]
            nb = len(problems_alive)
            # the children still writing, packed left: slot j of row b computes child order[b, j]
            n_writing = writing.sum(1)
            S = int(n_writing.max())
            order = torch.argsort((~writing).to(torch.int8), dim=1, stable=True)[:, :S]
            used = torch.arange(S, device=dev)[None, :] < n_writing[:, None]
            tok_in = torch.where(used, tok.view(nb, C).gather(1, order), ck.vocab.pad)
            owner = torch.cat([owner, torch.where(used, order, NOBODY)], dim=1)
            step_logits = run(ck.model, cache, input_ids=tok_in,
                              attention_mask=owner_mask(owner, torch.where(used, order, DUMMY)),
                              position_ids=(plen[:, None] + t).expand(nb, S)).logits
            logits = torch.zeros((nb * C, V), dtype=step_logits.dtype, device=dev)
            logits[(torch.arange(nb, device=dev)[:, None] * C + order)[used]] = step_logits[used]
        out = out.numpy()
        for b, i in enumerate(live):
            result[i] = out[b * C: b * C + counts[i]]
        return result

    def _sample_autoregressive(self, prompts, counts, allowed, max_size, uniforms):
        """One row per problem: the whole next population as one sequence."""
        ck = self.load()
        live = [i for i, c in enumerate(counts) if c > 0]
        result = [np.zeros((1, 0), dtype=np.int64) for _ in prompts]
        if not live:
            return result
        dev = ck.device
        steps = max(counts[i] for i in live) * (max_size + 1)
        cache, logits, mask, next_pos = prefill(ck.model, [prompts[i] for i in live], ck.vocab.pad, dev)
        allow = torch.from_numpy(np.stack([allowed[i] for i in live])).to(dev)
        proc = GrammarMask(ck.vocab, allow, max_size, [counts[i] for i in live], self.sampling.constrained)
        U = torch.zeros((len(live), steps))
        for r, i in enumerate(live):
            U[r, : len(uniforms[i])] = torch.from_numpy(uniforms[i]).float()
        U = U.to(dev)
        self.stats["rows"] += len(live)
        out = torch.full((len(live), steps), ck.vocab.pad, dtype=torch.long)
        rows = torch.arange(len(live), device=dev)
        for t in range(steps):
            tok = self._sample_step(logits, proc, U, rows, t, out)
            alive = ~proc.finished
            n_alive = int(alive.sum())
            if n_alive == 0 or t == steps - 1:
                break
            if n_alive < len(rows):
                keep = alive.nonzero()[:, 0]
                cache.reorder_cache(keep)
                mask, next_pos, tok, rows = mask[keep], next_pos[keep], tok[keep], rows[keep]
                proc.select(keep)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            logits = run(ck.model, cache, input_ids=tok[:, None], attention_mask=mask,
                         position_ids=next_pos[:, None]).logits[:, -1, :]
            next_pos = next_pos + 1
        out = out.numpy()
        for r, i in enumerate(live):
            result[i] = out[r:r + 1]
        return result

    # -- results -----------------------------------------------------------------
    def _split(self, seq_rows, count):
        """Token lists of the proposed expressions (one-step: one row each; AR: split at <sep>)."""
        v = self.load().vocab
        exprs = []
        for row in seq_rows:
            cur = []
            for t in row.tolist():
                if t == v.eos or t == v.pad:
                    break
                if t == v.sep:
                    exprs.append(cur)
                    cur = []
                else:
                    cur.append(t)
            if cur or not self.autoregressive:
                exprs.append(cur)
        exprs = exprs[:count]
        exprs += [[] for _ in range(count - len(exprs))]  # an unfinished autoregressive row: missing = invalid
        return exprs

    def _to_proposal(self, p: Problem, seq_rows, members, n, model_time) -> Proposal:
        vocab_tokens = self.load().vocab.tokens
        prims = p.primitives
        max_size = p.config.max_size
        width = max(max_size, p.codes.shape[1])
        codes = np.zeros((n, width), dtype=np.int16)
        cvals = np.zeros((n, width))
        lengths = np.zeros(n, dtype=np.int64)
        parents = np.full((n, 2), -1, dtype=np.int64)
        member_subs = [(idx, {toks[s:e] for s, e in subtrees(toks)}) for idx, toks in members]
        best = p.best_index()
        valid = 0
        for k, ids in enumerate(self._split(seq_rows, n)):
            toks = tuple(vocab_tokens[i] for i in ids)
            if toks and len(toks) <= max_size and is_valid(toks) and prims.admits(toks):
                valid += 1
                codes[k, : len(toks)], cvals[k, : len(toks)] = prims.encode_values(toks)
                lengths[k] = len(toks)
                par = infer_parents(toks, member_subs)
                parents[k, : len(par)] = par
                if prims.fit and FIT_TOKEN in toks:
                    warm_start(toks, cvals[k], members, p.cvals)
            else:  # only reachable unconstrained: fall back to a copy of the best
                lengths[k] = p.lengths[best]
                codes[k, : lengths[k]] = p.codes[best, : lengths[k]]
                cvals[k, : lengths[k]] = p.cvals[best, : lengths[k]]
                parents[k, 0] = best
        st = p.stats
        st["model_time"] = st.get("model_time", 0.0) + model_time
        if n == 0:  # every child came from the expert this generation (mixed rollout)
            return Proposal(codes, lengths, parents, np.full(n, NEURAL, dtype=np.int8), cvals)
        st["neural_proposals"] = st.get("neural_proposals", 0) + n
        st["well_formed"] = st.get("well_formed", 0) + valid
        st["well_formed_pct"] = 100.0 * st["well_formed"] / max(st["neural_proposals"], 1)
        self.stats["proposals"] += n
        self.stats["well_formed"] += valid
        return Proposal(codes, lengths, parents, np.full(n, NEURAL, dtype=np.int8), cvals)

    def reset_stats(self):
        for k in self.stats:
            self.stats[k] = 0 if k != "model_time" else 0.0
