"""Grammar-constrained sampling of prefix expressions.

:class:`GrammarMask` admits only tokens keeping each row a well-formed prefix expression:
within ``max_size`` nodes, within the row's own variables, operators and
constants, and closed by ``<sep>``/``<eos>`` exactly when complete. Every
sampled proposal therefore parses, by construction.

Sampling draws token ``k`` where the cumulative probability first exceeds a
uniform supplied by the caller: each problem's uniforms come from its own
generator, so a problem's samples do not depend on what else is in the batch
(up to floating-point differences in the logits, see README).
"""
from __future__ import annotations

import torch


class GrammarMask:
    """Masks logits so that each row stays a valid prefix expression (or sequence of them).

    ``allowed``: (rows x vocab) bool, the expression tokens each row may use.
    ``n_expressions``: per row, how many expressions the row must produce
    (1 for one-step children; the whole population for autoregressive mode),
    separated by ``<sep>`` and ended by ``<eos>``. ``constrained=False`` only
    stops finished rows, so raw model validity can be measured.
    """

    def __init__(self, vocab, allowed: torch.Tensor, max_size: int, n_expressions=None, constrained=True):
        dev = allowed.device
        self.vocab = vocab
        self.rows = allowed.shape[0]
        self.allowed = allowed
        self.max_size = int(max_size)
        self.constrained = constrained
        self.arity = torch.as_tensor(vocab.arity, device=dev)
        self.expr_token = self.arity >= 0
        self.need = torch.ones(self.rows, dtype=torch.long, device=dev)
        self.length = torch.zeros(self.rows, dtype=torch.long, device=dev)
        self.count = torch.zeros(self.rows, dtype=torch.long, device=dev)
        n = torch.ones(self.rows, dtype=torch.long) if n_expressions is None else torch.as_tensor(n_expressions)
        self.n_expr = n.to(dev).long()
        self.finished = torch.zeros(self.rows, dtype=torch.bool, device=dev)

    def select(self, index: torch.Tensor):
        """Keep only rows ``index`` (when finished rows are dropped from the batch)."""
        for name in ("allowed", "need", "length", "count", "n_expr", "finished"):
            setattr(self, name, getattr(self, name).index_select(0, index))
        self.rows = len(index)

    def update(self, tokens: torch.Tensor):
        """Advance every row's state by the token it just emitted."""
        v = self.vocab
        is_sep = tokens == v.sep
        is_eos = tokens == v.eos
        ar = self.arity[tokens]
        in_expr = ar >= 0
        self.need = torch.where(in_expr, self.need + ar - 1, self.need)
        self.length = torch.where(in_expr, self.length + 1, self.length)
        restart = is_sep & ~self.finished
        self.count = self.count + restart.long()
        self.need = torch.where(restart, torch.ones_like(self.need), self.need)
        self.length = torch.where(restart, torch.zeros_like(self.length), self.length)
        self.finished = self.finished | is_eos | (tokens == v.pad)
        if not self.constrained:
            # without the grammar a row may run past max_size: stop it there (it is then invalid)
            self.finished = self.finished | (self.length > self.max_size)

    def mask(self) -> torch.Tensor:
        """(rows x vocab) bool: the tokens each row may emit next."""
        v = self.vocab
        V = self.arity.shape[0]
        eye = torch.zeros(V, dtype=torch.bool, device=self.allowed.device)
        pad_only = eye.clone()
        pad_only[v.pad] = True
        if not self.constrained:
            m = torch.ones((self.rows, V), dtype=torch.bool, device=self.allowed.device)
            m[:, v.pad] = False
            return torch.where(self.finished[:, None], pad_only[None, :], m)
        sep_only = eye.clone()
        sep_only[v.sep] = True
        eos_only = eye.clone()
        eos_only[v.eos] = True
        # after emitting a token of arity a, at least (need - 1 + a) leaves are still owed
        total = self.length[:, None] + 1 + (self.need[:, None] - 1 + self.arity[None, :].clamp(min=0))
        ok = self.allowed & self.expr_token[None, :] & (total <= self.max_size)
        last = (self.count + 1 >= self.n_expr)[:, None]
        closing = torch.where(last, eos_only[None, :], sep_only[None, :])
        m = torch.where((self.need > 0)[:, None], ok, closing)
        return torch.where(self.finished[:, None], pad_only[None, :], m)


def sample_from_logits(logits: torch.Tensor, uniforms: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0):
    """Inverse-CDF sampling of one token per row from (already masked) logits."""
    logits = logits.float() / max(float(temperature), 1e-6)
    V = logits.shape[-1]
    if top_k and top_k < V:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        cum = sorted_p.cumsum(-1)
        drop_sorted = (cum - sorted_p) >= top_p  # keep the smallest prefix reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
    cdf = probs.cumsum(-1)
    target = uniforms.to(cdf.device, cdf.dtype)[:, None] * cdf[:, -1:]
    idx = (cdf <= target).sum(-1).clamp(max=V - 1)
    # rounding at the top of the CDF could land on a zero-probability token: take the likeliest instead
    bad = probs.gather(1, idx[:, None])[:, 0] <= 0
    if bool(bad.any()):
        idx = torch.where(bad, probs.argmax(-1), idx)
    return idx
