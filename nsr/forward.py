"""The model's forward passes for sampling children: prompts prefilled once, children decoded after them.

Both decoders serve the one sampling loop (:meth:`nsr.neural.NeuralProposer._sample_one_step`) through
three calls: ``prefill`` (every prompt once; the last position's logits), ``step`` (one token for each
child: only those still being written, packed left in the prompt's row, where ``packs``; else every child in
its own slot) and ``keep`` (problems whose children are all finished leave the batch).

* :class:`TransformersDecoder` runs the checkpoint's own transformers forward: one cache per prompt row
  holding every child's keys, and a 4-D mask (:func:`~nsr.model.owner_mask`) letting each child see the
  prompt and itself. It is the reference the tests hold the other to.
* :class:`TreeDecoder` writes the Llama layer out on the same weights (RMSNorm, RoPE from the model's own
  rotary module, SiLU-gated MLP, tied head) and keeps apart the two things a child attends to: its prompt's
  keys/values (one copy per prompt) and its own, in a buffer preallocated for the longest child. The
  reference's cache grows by a ``torch.cat`` of the whole cache every step and attends over every sibling's
  columns only to mask them away; here a step costs what the child sees. Prompts are right-padded, so prefill
  is plain causal attention, and the linear layers run on real tokens only; q/k/v and gate/up are each one
  matrix, the norms' weights folded in. Results equal the reference's up to float32 rounding (tests); the time
  it saves is in BENCHMARKS.md (issue 22, `bench/bench_forward.py`).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .model import DUMMY, NOBODY, PROMPT, owner_mask, prefill, run

FORWARDS = ("auto", "tree", "transformers")


def unsupported(model) -> str | None:
    """Why :class:`TreeDecoder` cannot run ``model`` (None: it can)."""
    cfg = model.config
    if cfg.model_type != "llama":
        return f"model type {cfg.model_type!r} (only llama is written out)"
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        return "biased projections"
    if cfg.hidden_act != "silu":
        return f"activation {cfg.hidden_act!r}"
    if getattr(cfg, "pretraining_tp", 1) != 1:
        return "pretraining_tp != 1"
    if not getattr(cfg, "tie_word_embeddings", False) and not hasattr(model, "lm_head"):
        return "no output head"
    return None


def make_decoder(model, forward: str = "auto"):
    """The decoder ``forward`` names ('auto': the written-out one wherever the model allows it)."""
    if forward == "transformers":
        return TransformersDecoder(model)
    why = unsupported(model)
    if why is None:
        return TreeDecoder(model)
    if forward == "tree":
        raise ValueError(f"the tree forward cannot run this checkpoint: {why}")
    return TransformersDecoder(model)


class _Decoder:
    packs = True  # step() computes only the children still writing, packed left; else every child, in order

    def session(self):
        """A copy for one sampling call: it shares the weights and holds that call's caches."""
        return copy.copy(self)


class TransformersDecoder(_Decoder):
    """The transformers forward with a shared-prefix cache and :func:`~nsr.model.owner_mask` (the reference)."""

    def __init__(self, model):
        self.model = model

    def prefill(self, prompts, pad_id, device, children: int, steps: int):
        self.cache, last, pmask, self.plen = prefill(self.model, prompts, pad_id, device)
        self.owner = torch.where(pmask.bool(), PROMPT, NOBODY)
        return last

    def keep(self, keep):
        self.cache.reorder_cache(keep)
        self.plen, self.owner = self.plen[keep], self.owner[keep]

    def step(self, tokens, order, used, t):
        nb, S = tokens.shape
        self.owner = torch.cat([self.owner, torch.where(used, order, NOBODY)], dim=1)
        return run(self.model, self.cache, input_ids=tokens,
                   attention_mask=owner_mask(self.owner, torch.where(used, order, DUMMY)),
                   position_ids=(self.plen[:, None] + t).expand(nb, S)).logits


def _rms(x, eps):
    # LlamaRMSNorm without its weight (folded into the next matrix): the statistics in float32 whatever the dtype
    dtype = x.dtype
    x = x.to(torch.float32)
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).to(dtype)


# Rows (tokens) per matrix product are rounded up (padding rows, computed and dropped): oneDNN builds a kernel
# per new shape, which under bf16 cost more than the product itself (1.5-3.5 ms against 0.3 ms, 2 cores), and
# a prompt batch is prefilled in groups of about PREFILL_TOKENS tokens so that no intermediate outgrows the
# allocator's reuse (fresh mmap'd pages per call, then page faults: 25 ms for a 13,000 x 768 product).
PREFILL_TOKENS = 2048


def _rows(n: int) -> int:
    step = 16 if n <= 64 else 64 if n <= 1024 else 256
    return -(-n // step) * step


def _wide(x):
    """Softmax statistics in float32 at least (bf16 scores lose too much), float64 kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _flash_cpu():
    """CPU flash attention that also returns each query's log-sum-exp (a private op: absent, we do without)."""
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


class TreeDecoder(_Decoder):
    """The Llama forward written out for tree decoding (see the module's docstring)."""

    packs = False

    def __init__(self, model):
        cfg, m = model.config, model.model
        self.H = cfg.num_attention_heads
        self.Hkv = getattr(cfg, "num_key_value_heads", None) or self.H
        self.d = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.H
        self.g = self.H // self.Hkv  # query heads per key/value head (consecutive, as transformers' repeat_kv)
        self.scale = self.d ** -0.5
        self.rotary = m.rotary_emb
        self.embed = m.embed_tokens.weight
        self.flash = _flash_cpu() if self.embed.device.type == "cpu" else None

        def fold(norm, *linears):  # (in, out) matrices with the RMSNorm weight folded into their rows
            w = torch.cat([lin.weight for lin in linears]).t()
            return (norm.weight[:, None] * w).contiguous(), norm.variance_epsilon

        with torch.no_grad():
            self.head = fold(m.norm, model.lm_head)
            self.layers = [dict(qkv=fold(lay.input_layernorm, lay.self_attn.q_proj, lay.self_attn.k_proj,
                                         lay.self_attn.v_proj),
                                o=lay.self_attn.o_proj.weight.t().contiguous(),
                                gate_up=fold(lay.post_attention_layernorm, lay.mlp.gate_proj, lay.mlp.up_proj),
                                down=lay.mlp.down_proj.weight.t().contiguous()) for lay in m.layers]

    def _rotary(self, x, positions):
        """cos and sign-folded sin at ``positions`` (1 x n), shaped to broadcast over heads."""
        cos, sin = self.rotary(x, positions)
        half = self.d // 2
        return cos[0, :, None, :], torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)[:, None, :]

    def _qkv(self, x, L, cos, sin):
        """q and k rotated (RoPE on both in one pass) and v, each (tokens, heads, head_dim)."""
        H, Hkv, d = self.H, self.Hkv, self.d
        qkv = _rms(x, L["qkv"][1]) @ L["qkv"][0]
        qk = qkv[:, :(H + Hkv) * d].view(-1, H + Hkv, d)
        half = d // 2
        qk = torch.addcmul(qk * cos, torch.cat([qk[..., half:], qk[..., :half]], dim=-1), sin)
        return qk[:, :H], qk[:, H:], qkv[:, (H + Hkv) * d:].view(-1, Hkv, d)

    def _mlp(self, x, L):
        gate, up = (_rms(x, L["gate_up"][1]) @ L["gate_up"][0]).chunk(2, dim=-1)
        return x + (F.silu(gate) * up) @ L["down"]

    def _logits(self, x):
        return _rms(x, self.head[1]) @ self.head[0]

    def prefill(self, prompts, pad_id, device, children: int, steps: int):
        B, P = len(prompts), max(len(p) for p in prompts)
        dtype = self.embed.dtype
        self.pk = [torch.empty((B, self.H, P, self.d), dtype=dtype, device=device) for _ in self.layers]
        self.pv = [torch.empty_like(k) for k in self.pk]
        last = []
        start = 0
        while start < B:  # groups of prompts of about PREFILL_TOKENS tokens (see _rows)
            stop, n = start + 1, len(prompts[start])
            while stop < B and n + len(prompts[stop]) <= PREFILL_TOKENS:
                n += len(prompts[stop])
                stop += 1
            last.append(self._prefill_group(prompts[start:stop], start, pad_id, device))
            start = stop
        lens = torch.tensor([len(p) for p in prompts], device=device)
        self.plen, self.C = lens, children
        self.pbias = torch.zeros((B, 1, 1, P), dtype=dtype, device=device).masked_fill(
            torch.arange(P, device=device)[None, None, None, :] >= lens[:, None, None, None], float("-inf"))
        # each child's own keys and values, by step: written in place, never concatenated; every slot writes
        # position t before reading positions <= t, so nothing uninitialised is ever read
        self.own = [torch.empty((B * children, steps, 2, self.Hkv, self.d), dtype=dtype, device=device)
                    for _ in self.layers]
        return self._logits(torch.cat(last))

    def _prefill_group(self, prompts, first, pad_id, device):
        """Prefill prompts ``first``.. into the prompt caches; the last position's hidden state of each."""
        B, P = len(prompts), max(len(p) for p in prompts)
        lens = torch.tensor([len(p) for p in prompts], device=device)
        real = torch.arange(P, device=device)[None, :] < lens[:, None]
        n = int(lens.sum())
        ids = torch.full((_rows(n),), pad_id, dtype=torch.long)
        ids[:n] = torch.as_tensor([t for p in prompts for t in p], dtype=torch.long)
        pos = torch.zeros(len(ids), dtype=torch.long)
        pos[:n] = torch.arange(P).expand(B, P)[real.cpu()]
        x = self.embed[ids.to(device)]  # (tokens, hidden): the linear layers see the real tokens only
        cos, sin = self._rotary(x, pos.to(device)[None, :])
        a_rows = x.new_zeros(len(x), self.H * self.d)
        for i, L in enumerate(self.layers):
            q, k, v = self._qkv(x, L, cos, sin)
            qkv = []
            for t in (q, k, v):  # to (prompt, heads, position, head_dim), zero-padded on the right
                full = t.new_zeros(B, P, *t.shape[1:])
                full[real] = t[:n]
                qkv.append(full.transpose(1, 2))
            q, k, v = qkv
            if self.g > 1:  # every query head its own copy: prompt attention is then one call
                k, v = k.repeat_interleave(self.g, 1), v.repeat_interleave(self.g, 1)
            # right padding: a real token never sees a pad, so plain causal attention is exact
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
            a_rows[:n] = a.transpose(1, 2)[real].reshape(n, -1)
            x = self._mlp(x + a_rows @ L["o"], L)
            self.pk[i][first:first + B, :, :P] = k
            self.pv[i][first:first + B, :, :P] = v
            # padding keys/values must be finite: masked weights are 0, and 0 x NaN is not
            self.pk[i][first:first + B, :, P:] = 0
            self.pv[i][first:first + B, :, P:] = 0
        return x[lens.cumsum(0) - 1]

    def keep(self, keep):
        # compacted in place, front to back (keep is increasing, so no source is overwritten before it is read):
        # fresh copies of these buffers would cost page faults on every drop
        nb = len(keep)
        for j, i in enumerate(keep.tolist()):
            if i != j:
                for buf in self.pk + self.pv:
                    buf[j].copy_(buf[i])
                for own in self.own:
                    own[j * self.C:(j + 1) * self.C].copy_(own[i * self.C:(i + 1) * self.C])
        self.pk, self.pv = [k[:nb] for k in self.pk], [v[:nb] for v in self.pv]
        self.own = [own[:nb * self.C] for own in self.own]
        self.pbias, self.plen = self.pbias[keep], self.plen[keep]

    def _prompt_attention(self, q, pk, pv):
        """Attention of (problems, heads, slots, head_dim) queries to their prompt: output and log-sum-exp."""
        if self.flash is not None:
            out, lse = self.flash(q, pk, pv, 0.0, False, attn_mask=self.pbias, scale=self.scale)
            return out, lse
        s = _wide(q @ pk.transpose(-1, -2)) * self.scale + self.pbias
        lse = torch.logsumexp(s, dim=-1)
        return (torch.exp(s - lse[..., None]).to(q.dtype) @ pv), lse

    def step(self, tokens, order, used, t):
        # every child of a live problem takes its slot (order is the identity, ``packs`` is False): a finished
        # child computes a token nobody reads, which costs less than gathering the others' keys every step
        nb, S = tokens.shape
        n, H, Hkv, g, d = nb * S, self.H, self.Hkv, self.g, self.d
        x = self.embed[F.pad(tokens.reshape(-1), (0, _rows(n) - n))]
        cos, sin = self._rotary(x, F.pad((self.plen[:, None] + t).expand(nb, S).reshape(1, n), (0, len(x) - n)))
        a_rows = x.new_zeros(len(x), H * d)
        for L, pk, pv, own in zip(self.layers, self.pk, self.pv, self.own):
            q, k, v = self._qkv(x, L, cos, sin)
            own[:, t, 0] = k[:n]
            own[:, t, 1] = v[:n]
            q = q[:n]
            mine = own[:, :t + 1].permute(0, 2, 3, 1, 4)  # (slots, k/v, kv heads, t+1, head_dim), a view
            # two softmaxes, over the prompt and over the child's own tokens, joined by their log-sum-exps:
            # the same attention as one softmax over both, without a copy of the prompt per child
            out_p, lse_p = self._prompt_attention(q.view(nb, S, H, d).transpose(1, 2), pk, pv)
            out_p = out_p.transpose(1, 2).reshape(n, Hkv, g, d)
            lse_p = lse_p.transpose(1, 2).reshape(n, Hkv, g)
            s = _wide(q.view(n, Hkv, g, d) @ mine[:, 0].transpose(-1, -2)) * self.scale  # (slots, kv, g, t+1)
            lse_o = torch.logsumexp(s, dim=-1)
            out_o = torch.exp(s - lse_o[..., None]).to(x.dtype) @ mine[:, 1]
            w = torch.sigmoid(_wide(lse_p) - lse_o)[..., None].to(x.dtype)
            a_rows[:n] = (out_o + w * (out_p - out_o)).reshape(n, -1)
            x = self._mlp(x + a_rows @ L["o"], L)
        return self._logits(x[:n]).view(nb, S, -1)
