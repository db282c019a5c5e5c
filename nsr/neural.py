"""The neural proposer: a checkpoint samples children for many population states at once.

One model call per generation serves every problem in the batch: all prompts
are prefilled together (each prompt once), then all children of a prompt are
decoded in that prompt's row, step by step, each child attending to the
prompt and to itself only (tree attention, :mod:`nsr.forward`), under
:class:`~nsr.decoding.GrammarMask`. Problems whose children
are all finished are dropped from the batch as decoding goes on.

Prompts are built from the populations' integer codes (:class:`~nsr.prompt.StateEncoder`) and the
sampled rows become children in compiled code (:mod:`nsr.children`: validity, inferred parents
(documented there), warm-started constants), so the CPU side keeps up with a GPU.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from . import children, kernels
from .config import SamplingConfig
from .decoding import GrammarMask, sample_from_logits
from .evolution import NEURAL, Problem, Proposal
from .expressions import subtrees
from .forward import make_decoder
from .model import attention_backends, load_checkpoint, prefill, run
from .prompt import StateEncoder, rank_members
from .safe_io import InputError


def infer_parents(child: tuple, member_subtrees: list) -> list:
    """Up to two parent indices of a child given as tokens: the reference :func:`nsr.children.infer` is
    tested against. ``member_subtrees`` is [(population index, set of subtree tuples)] in best-first order."""
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


class NeuralProposer:
    """Samples children from a checkpoint (loaded lazily, once, and shared by every call)."""

    def __init__(self, sampling: SamplingConfig):
        if sampling.checkpoint is None:
            raise InputError("neural SR needs a checkpoint")
        self.sampling = sampling
        self._ck = None
        self._encoder = None
        self._decoder = None
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
    def threads(self) -> int:
        """The CPU threads this process gives torch (:func:`nsr.threads.configure_threads`); scoring the
        children uses as many while the model waits."""
        return torch.get_num_threads()

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
    @property
    def encoder(self) -> StateEncoder:
        if self._encoder is None:
            self._encoder = StateEncoder(self.load().vocab)
        return self._encoder

    def state(self, p: Problem):
        """(members shown, prompt ids) of a problem's population (see :mod:`nsr.prompt`).

        The model sees skeletons (``C`` for each fitted constant) with their errors: the values are the
        fitting's job, and the error token already says how well the fitted skeleton does."""
        keys = kernels.hash_rows(p.codes, p.lengths).view(np.int64)
        return self.encoder.encode(p.primitives, p.generation, p.fitness, keys, p.codes, p.lengths, p.mse, p.scale,
                                   self.load().prompt.max_members, autoregressive=self.autoregressive)

    # -- sampling ----------------------------------------------------------------
    def propose(self, problems: Sequence[Problem], n_children) -> list:
        ck = self.load()
        counts = list(n_children) if isinstance(n_children, (list, tuple)) else [int(n_children)] * len(problems)
        max_size = problems[0].config.max_size if problems else 0
        members, prompts = zip(*[self.state(p) for p in problems]) if problems else ((), ())
        allowed = [ck.vocab.allowed_mask(p.primitives.operators, p.primitives.n_vars, p.primitives.constant_leaves)
                   for p in problems]
        steps = max_size + 1
        if self.autoregressive:
            uniforms = [p.rng.random(c * steps) for p, c in zip(problems, counts)]
        else:
            uniforms = [p.rng.random((c, steps)) for p, c in zip(problems, counts)]
        t0 = time.perf_counter()
        seqs = self.sample(problems, prompts, counts, allowed, max_size, uniforms)
        if ck.device.type == "cuda":
            torch.cuda.synchronize(ck.device)
        model_time = time.perf_counter() - t0
        self.stats["calls"] += 1
        self.stats["model_time"] += model_time
        total = max(sum(counts), 1)
        return [self._to_proposal(p, s, m, c, model_time * c / total)
                for p, s, m, c in zip(problems, seqs, members, counts)]

    def sample(self, problems, prompts, counts, allowed, max_size, uniforms) -> list:
        """Token id rows per problem: the model's work (the stand-in below replaces only this)."""
        with torch.inference_mode(), attention_backends():
            if self.autoregressive:
                return self._sample_autoregressive(prompts, counts, allowed, max_size, uniforms)
            return self._sample_one_step(prompts, counts, allowed, max_size, uniforms)

    def _sample_step(self, logits, proc, U, rows, t, out):
        """Sample one token for each live row under the grammar mask; record it."""
        s = self.sampling
        lg = logits.float().masked_fill(~proc.mask(), float("-inf"))
        tok = sample_from_logits(lg, U[rows, t], s.temperature, s.top_k, s.top_p)
        out[rows.cpu(), t] = tok.cpu()
        proc.update(tok)
        return tok

    def decoder(self):
        """The forward pass sampling runs (:mod:`nsr.forward`), built once per checkpoint."""
        if self._decoder is None:
            try:
                self._decoder = make_decoder(self.load().model, self.sampling.forward)
            except ValueError as e:
                raise InputError(f"{self.sampling.checkpoint}: {e}") from None
        return self._decoder

    def _sample_one_step(self, prompts, counts, allowed, max_size, uniforms):
        """All children of a prompt decode in the prompt's row, attending to the prompt and to
        themselves (tree attention, :mod:`nsr.forward`); each step computes only the children
        still being written, and rows whose children are all done leave the batch."""
        ck = self.load()
        live = [i for i, c in enumerate(counts) if c > 0]
        steps = max_size + 1
        result = [np.zeros((0, steps), dtype=np.int64) for _ in prompts]
        if not live:
            return result
        dev, V = ck.device, len(ck.vocab)
        C = max(counts[i] for i in live)
        dec = self.decoder().session()
        last = dec.prefill([prompts[i] for i in live], ck.vocab.pad, dev, C, steps)
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
                dec.keep(keep)
                problems_alive = problems_alive[keep]
                proc.select((keep[:, None] * C + children[None, :]).reshape(-1))
                tok, writing = tok.view(-1, C)[keep].reshape(-1), writing[keep]
            nb = len(problems_alive)
            if dec.packs:  # the children still writing, packed left: slot j of row b computes child order[b, j]
                n_writing = writing.sum(1)
                S = int(n_writing.max())
                order = torch.argsort((~writing).to(torch.int8), dim=1, stable=True)[:, :S]
                used = torch.arange(S, device=dev)[None, :] < n_writing[:, None]
            else:  # every child in its own slot
                order, used = children.expand(nb, C), writing
            tok_in = torch.where(used, tok.view(nb, C).gather(1, order), ck.vocab.pad)
            step_logits = dec.step(tok_in, order, used, t)
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
    def _to_proposal(self, p: Problem, seq_rows, members, n, model_time) -> Proposal:
        v = self.load().vocab
        prims = p.primitives
        max_size = p.config.max_size
        width = max(max_size, p.codes.shape[1])
        codes, lengths, valid, parents, cvals = children.to_children(
            np.asarray(seq_rows, dtype=np.int64), n, v.eos, v.pad, v.sep, max_size, width,
            self.encoder.code_of_id(prims), p.codes, p.lengths, p.cvals, members, prims.fit)
        if not valid.all():  # only reachable unconstrained: an invalid proposal becomes a copy of the best
            best = p.best_index()
            bad = ~valid
            codes[bad, : p.codes.shape[1]] = p.codes[best, :width]
            cvals[bad, : p.cvals.shape[1]] = p.cvals[best, :width]
            lengths[bad] = p.lengths[best]
            parents[bad] = (best, -1)
        st = p.stats
        st["model_time"] = st.get("model_time", 0.0) + model_time
        if n == 0:  # every child came from the expert this generation (mixed rollout)
            return Proposal(codes, lengths, parents, np.full(n, NEURAL, dtype=np.int8), cvals)
        n_valid = int(valid.sum())
        st["neural_proposals"] = st.get("neural_proposals", 0) + n
        st["well_formed"] = st.get("well_formed", 0) + n_valid
        st["well_formed_pct"] = 100.0 * st["well_formed"] / max(st["neural_proposals"], 1)
        self.stats["proposals"] += n
        self.stats["well_formed"] += n_valid
        return Proposal(codes, lengths, parents, np.full(n, NEURAL, dtype=np.int8), cvals)

    def reset_stats(self):
        for k in self.stats:
            self.stats[k] = 0 if k != "model_time" else 0.0


class StandInProposer(NeuralProposer):
    """The neural proposer with the model replaced by grammar-valid random children at zero model cost.

    Everything else runs as for a checkpoint (prompts, decoding the proposals, heritage, scoring,
    bookkeeping), so a run measures the CPU side of neural SR: what a GPU would wait for."""

    def __init__(self, sampling: SamplingConfig = None):
        super().__init__(sampling or SamplingConfig(checkpoint="(stand-in)"))

    def load(self):
        if self._ck is None:
            from .model import LoadedCheckpoint
            from .prompt import PromptConfig
            from .tokenizer import Vocab

            self._ck = LoadedCheckpoint(None, None, Vocab(), "(stand-in)", "one_step", torch.device("cpu"),
                                        torch.float32, PromptConfig())
        return self._ck

    def sample(self, problems, prompts, counts, allowed, max_size, uniforms) -> list:
        v = self.load().vocab
        out = []
        for p, c in zip(problems, counts):
            prims = p.primitives
            codes, lengths = kernels.random_population(c, p.rng, p.config.max_depth, max_size, prims.op_codes,
                                                       prims.leaf_codes)
            rows = np.full((c, max_size + 1), v.pad, dtype=np.int64)
            rows[:, :max_size] = np.where(np.arange(max_size) < lengths[:, None],
                                          self.encoder.code_ids(prims)[codes], v.pad)
            rows[np.arange(c), lengths] = v.eos
            out.append(rows)
        return out
