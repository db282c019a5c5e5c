"""The model: a standard Hugging Face causal LM (Llama architecture, tiny), and the
shared-prefix attention used both to train and to sample.

A state's prompt is run once and its keys/values are shared by all the
children that follow it: children are laid out after the prompt in the same
row, and a 4-D attention mask lets each child see the prompt and itself only
(:func:`segment_mask` for training, :func:`owner_mask` for decoding).
"""
from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass

import torch

from .prompt import PromptConfig
from .safe_io import InputError
from .tokenizer import VOCAB_VERSION, Vocab, vocab_tokens

MODEL_SIZES = {
    # name: (hidden, layers, heads, intermediate)
    "tiny": (64, 2, 4, 192),
    "small": (128, 4, 4, 384),
    "base": (256, 6, 8, 768),
}


def make_config(vocab: Vocab, size="small", hidden=None, layers=None, heads=None, intermediate=None,
                max_positions=2048, autoregressive=False, prompt: PromptConfig = PromptConfig()):
    from transformers import LlamaConfig

    h, nl, nh, ff = MODEL_SIZES[size]
    h, nl, nh, ff = hidden or h, layers or nl, heads or nh, intermediate or ff
    cfg = LlamaConfig(
        vocab_size=len(vocab), hidden_size=h, intermediate_size=ff, num_hidden_layers=nl, num_attention_heads=nh,
        num_key_value_heads=nh, max_position_embeddings=max_positions, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=vocab.bos, eos_token_id=vocab.eos, pad_token_id=vocab.pad, attention_dropout=0.0)
    # What this toolkit needs to use the checkpoint correctly travels in the config.
    cfg.nsr = {"vocab_version": VOCAB_VERSION, "mode": "autoregressive" if autoregressive else "one_step",
               "prompt": prompt.to_dict()}
    return cfg


def new_model(config, seed=0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def resolve_device(device=None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise InputError(f"bad device {device!r}: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} requested but MPS is not available")
    return dev


@dataclass
class LoadedCheckpoint:
    model: object
    tokenizer: object
    vocab: Vocab
    path: str
    mode: str  # 'one_step' or 'autoregressive'
    device: torch.device
    dtype: torch.dtype
    prompt: PromptConfig


def checkpoint_hash(path: str) -> str:
    """sha256 over a checkpoint folder's files (names and bytes), short form: which model made a trace."""
    import hashlib

    h = hashlib.sha256()
    for root, _dirs, files in sorted(os.walk(path)):
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(os.path.relpath(full, path).encode())
            with open(full, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def find_checkpoint(path: str) -> str:
    """A checkpoint folder, or the latest checkpoint-<step> inside a run folder."""
    if not os.path.isdir(path):
        raise InputError(f"{path}: checkpoint folder not found")
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    steps = []
    for name in os.listdir(path):
        if name.startswith("checkpoint-") and name[11:].isdigit() and os.path.exists(
                os.path.join(path, name, "config.json")):
            steps.append((int(name[11:]), name))
    if not steps:
        raise InputError(f"{path}: no config.json and no checkpoint-<step> folders inside")
    return os.path.join(path, max(steps)[1])


def quiet_transformers():
    """No progress bars or load reports from transformers: our CLIs print one-line errors."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # older hub versions: nothing to silence
        pass


def load_checkpoint(path: str, device=None, dtype=None, expect_mode=None) -> LoadedCheckpoint:
    """Load and check a checkpoint; every problem becomes an InputError naming it.

    ``expect_mode`` ('one_step' / 'autoregressive') is checked from config.json before the weights load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    path = find_checkpoint(path)
    dev = resolve_device(device)
    for f in ("config.json", "tokenizer.json"):
        if not os.path.exists(os.path.join(path, f)):
            raise InputError(f"{path}: missing {f}")
    if not any(n.endswith(".safetensors") for n in os.listdir(path)):
        raise InputError(f"{path}: no safetensors weights")
    try:
        with open(os.path.join(path, "config.json")) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}/config.json: unreadable ({str(e)[:200]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("nsr", {}), dict):
        raise InputError(f"{path}/config.json: not a model configuration (expected a JSON object)")
    nsr_cfg = raw.get("nsr") or {}
    mode = nsr_cfg.get("mode", "one_step")
    if mode not in ("one_step", "autoregressive"):
        raise InputError(f"{path}/config.json: unknown mode {mode!r}")
    try:
        prompt = PromptConfig.from_checkpoint(nsr_cfg)
    except ValueError as e:
        raise InputError(f"{path}/config.json: {e}") from None
    if expect_mode is not None and mode != expect_mode:
        raise InputError(f"{path}: the checkpoint was trained in {mode} mode, but {expect_mode} mode was asked for")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        tokens = vocab_tokens(tokenizer)
    except Exception as e:  # transformers raises many types for a broken tokenizer folder
        raise InputError(f"{path}: cannot load tokenizer ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if raw.get("vocab_size") != len(tokens):
        raise InputError(f"{path}: tokenizer has {len(tokens)} tokens but the model expects {raw.get('vocab_size')}: "
                         f"they do not belong together")
    try:
        vocab = Vocab(tokens)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype,
                                                     attn_implementation="sdpa")
    except Exception as e:
        raise InputError(f"{path}: cannot load model ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
    model.to(dev).eval()
    return LoadedCheckpoint(model, tokenizer, vocab, path, mode, dev, dtype, prompt)


def attention_backends():
    """Scaled-dot-product attention without cuDNN's kernel (a context manager around every forward).

    On Hopper, torch 2.11's bundled cuDNN makes SDPA prefer cuDNN attention, which builds an execution graph for
    each new shape (hundreds of milliseconds). Decoding changes shape at every token and training at every batch:
    on an H200 one generation took 1.3-1.45 s at every batch size from 1 to 512, the signature of a per-shape cost
    rather than of compute (first GPU run, 2026-11-27; with this fix, 5.3 ms per expression at batch 512, from
    24.7 ms). Memory-efficient attention takes the same 4-D masks with no per-shape build; flash cannot take a
    mask and is skipped; math is the fallback (and the CPU's path, unchanged)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def left_pad(seqs, pad_id, device):
    """Left-padded ids, attention mask and position ids for a list of id lists."""
    n = len(seqs)
    T = max(len(s) for s in seqs)
    ids = torch.full((n, T), pad_id, dtype=torch.long)
    mask = torch.zeros((n, T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s):] = torch.as_tensor(s, dtype=torch.long)
        mask[i, T - len(s):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def cache_kwarg(model) -> str:
    """The keyword for the KV cache: ``cache`` in newer transformers 5 releases,
    ``past_key_values`` before (the GPU image's 5.17 among them)."""
    name = getattr(model, "_nsr_cache_kw", None)
    if name is None:
        name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        model._nsr_cache_kw = name
    return name


def run(model, cache, **kw):
    """Forward with ``cache`` (a DynamicCache, updated in place)."""
    kw[cache_kwarg(model)] = cache
    return model(use_cache=True, **kw)


def prefill(model, prompts, pad_id, device):
    """Run each prompt once. Returns (cache, last-position logits, mask, next position per row)."""
    from transformers import DynamicCache

    ids, mask, pos = left_pad(prompts, pad_id, device)
    cache = DynamicCache()
    out = run(model, cache, input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
    return cache, out.logits[:, -1, :], mask, mask.sum(1)


PROMPT, NOBODY, DUMMY = -1, -2, -3  # owners of cache columns; DUMMY is the id of an unused query slot


def owner_mask(owner, slots):
    """4-D attention mask for decoding many children per prompt row at once (tree attention).

    ``owner`` (rows x K) says who each cache column belongs to: ``PROMPT``, a
    child index, or ``NOBODY`` (padding). ``slots`` (rows x S) are the children
    whose new token this step computes (``DUMMY`` for an unused slot). A child
    attends to the prompt and to its own tokens only, so all children of a
    prompt share one copy of the prompt's keys/values, and only children still
    being written take a slot (``True`` = attend)."""
    own = owner[:, None, :]
    return ((own == PROMPT) | (own == slots[:, :, None]))[:, None, :, :]


def segment_mask(segments):
    """4-D mask for packed prompt+children rows: ``segments`` is (B x L) with 0
    for prompt tokens, j >= 1 for child j and -1 for padding. A child token
    sees the prompt and its own earlier tokens; padding sees only itself."""
    L = segments.shape[1]
    causal = torch.ones((L, L), dtype=torch.bool, device=segments.device).tril()
    q, k = segments[:, :, None], segments[:, None, :]
    allowed = ((k == 0) & (q >= 0)) | ((k == q) & (q > 0))
    allowed = allowed & causal[None]
    allowed = allowed | torch.eye(L, dtype=torch.bool, device=segments.device)[None]
    return allowed[:, None, :, :]


class PackedPrefixLoss(torch.nn.Module):
    """Loss on target tokens only, for rows packed as [prompt][child 1][child 2]...:
    each child conditioned on its prompt alone (see :func:`segment_mask`), so a
    prompt with k target children is run once. One module forward per
    backward, as DDP (torchrun) expects."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, position_ids, segments, label_rows, label_pos, labels):
        out = self.model(input_ids=input_ids, position_ids=position_ids, attention_mask=segment_mask(segments),
                         use_cache=False)
        logits = out.logits[label_rows, label_pos].float()
        return torch.nn.functional.cross_entropy(logits, labels)


def save_checkpoint(model, folder: str, extra_json: dict = None):
    """config + safetensors weights + tokenizer (+ JSON files) in ``folder``."""
    from .tokenizer import build_hf_tokenizer

    quiet_transformers()
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    build_hf_tokenizer().save_pretrained(folder)
    for name, obj in (extra_json or {}).items():
        with open(os.path.join(folder, name), "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
