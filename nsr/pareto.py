"""The accuracy-versus-complexity front of a run.

Every SR user reads a front, not one formula: for each complexity, the best formula found. A :class:`Front` is
kept as the search goes (each generation offers its best individual per size; see ``Problem._record``), so
no formula the search saw and lost is missing from it, and nothing is recomputed at the end.

Complexity is the node count of the searched program (linear scaling's ``a * f + b`` is not counted: it is
free in every program). Each front entry gets PySR's score, ``-Δ log(loss) / Δ complexity`` against the
entry before it: how much error one more node buys.

Model selection (``EvolutionConfig.model_selection``):

* ``accuracy``: the lowest training MSE (gplearn's rule; the default, and what traces record);
* ``best``: PySR's rule, the highest score among the entries whose loss is within 1.5x of the lowest. On noisy
  data the lowest loss belongs to a formula that fits the noise; a few nodes fewer cost almost no error and
  score higher.
"""
from __future__ import annotations

import math

import numpy as np

from . import kernels

SELECTIONS = ("accuracy", "best")
BEST_LOSS_FACTOR = 1.5  # PySR's: candidates for "best" lose at most this factor of the lowest loss
_TINY = np.finfo(np.float64).tiny  # log(0) would be -inf: an exact fit scores as a loss this small


class Front:
    """Per program size, the lowest-MSE model seen: ``best = {size: (mse, model tokens)}``."""

    def __init__(self):
        self.best: dict = {}
        self._mse = np.full(64, np.inf)  # the kept MSE per size, for a vectorised test (it runs every generation)

    def offer(self, mse: np.ndarray, sizes: np.ndarray, tokens_of) -> None:
        """Offer a population: for each size its lowest finite MSE replaces the kept one if lower.
        ``tokens_of(i)`` gives individual ``i``'s model tokens (decoded only for the few that improve)."""
        top = int(sizes.max())
        if top >= len(self._mse):
            self._mse = np.concatenate((self._mse, np.full(top + 1 - len(self._mse), np.inf)))
        for i in kernels.front_improvements(mse, sizes, self._mse).tolist():
            self.best[int(sizes[i])] = (float(mse[i]), tokens_of(i))

    def entries(self) -> list:
        """The front, by complexity: each entry strictly more accurate than every smaller one, with its score.
        Dicts ``{complexity, loss, score, tokens}``."""
        out, last = [], math.inf
        for n in sorted(self.best):
            m, toks = self.best[n]
            if m < last:
                score = 0.0
                if out:
                    prev = out[-1]
                    score = -(math.log(max(m, _TINY)) - math.log(max(prev["loss"], _TINY))) / (n - prev["complexity"])
                out.append({"complexity": n, "loss": m, "score": score, "tokens": toks})
                last = m
        return out


def select(entries: list, rule: str) -> int:
    """Index into ``entries`` (a front, by complexity) of the model that ``rule`` picks."""
    if not entries:
        raise ValueError("empty front")
    if rule == "accuracy":
        return len(entries) - 1  # the front ends at the lowest loss
    if rule == "best":
        lowest = entries[-1]["loss"]
        ok = [i for i, e in enumerate(entries) if e["loss"] <= BEST_LOSS_FACTOR * lowest]
        return max(ok, key=lambda i: (entries[i]["score"], -i))
    raise ValueError(f"model_selection must be one of {', '.join(SELECTIONS)}, got {rule!r}")
