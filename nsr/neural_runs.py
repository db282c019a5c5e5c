"""Neural SR over an expressions file, in batches (used by generate_traces.py)."""
from __future__ import annotations

import os
import time

from .neural_sr import BatchedNeuralSR
from .runner import content_hash
from .traces import seed_for, trace_record


class NeuralRunner:
    """Loads (and so checks) the checkpoint on construction; ``run`` does the work."""

    def __init__(self, spec):
        self.spec = spec
        self.sr = BatchedNeuralSR(spec.checkpoint, temperature=spec.temperature, top_k=spec.top_k, top_p=spec.top_p,
                                  autoregressive=spec.autoregressive or None, device=spec.device, beta=spec.beta,
                                  seed=spec.seed, **spec.sr_params())
        self.ck = self.sr.neural.ck
        from .expressions import const_token, resolve_operators
        from .safe_io import InputError

        binary, unary = resolve_operators(spec.operator_set)
        try:
            self.ck.vocab.check_supports(1, binary + unary, [const_token(c) for c in spec.constants])
        except ValueError as e:
            raise InputError(f"{self.ck.path}: {e}") from None

    def run(self, todo, partial, bar) -> dict:
        """Run ``todo`` [(index, record)] in batches of ``spec.batch_size``; finished
        records go to ``partial`` as each batch ends. Returns metadata for the file."""
        spec, sr, ck = self.spec, self.sr, self.ck
        info = {"checkpoint": os.path.abspath(ck.path), "checkpoint_hash": content_hash(ck.path),
                "checkpoint_mode": ck.mode, "device": str(ck.device), "batch_size": spec.batch_size,
                "beta": spec.beta}
        params = spec.recorded_params()
        for start in range(0, len(todo), spec.batch_size):
            chunk = todo[start:start + spec.batch_size]
            problems = sr.make_problems([r["X"] for _, r in chunk], [r["y"] for _, r in chunk],
                                        rngs=[seed_for(spec.seed, i) for i, _ in chunk],
                                        ids=[r.get("id", i) for i, r in chunk])
            t0 = time.perf_counter()
            sr.run_problems(problems)
            per = (time.perf_counter() - t0) / len(chunk)  # a batch's problems run together: amortised wall time
            for (i, r), p in zip(chunk, problems):
                rec = trace_record(p, r, i, params, per, "neural_sr")
                rec.update(checkpoint=info["checkpoint"], checkpoint_hash=info["checkpoint_hash"])
                partial.add(rec)
                bar.update(1)
        info["model_stats"] = dict(sr.neural.stats)
        return info
