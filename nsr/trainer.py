"""Training the model on traces: :class:`TrainConfig` and :func:`train`.

The loss is on target tokens only, over rows packed as ``[prompt][child 1]
[child 2]...`` with a 4-D mask so each child sees its prompt and itself
(:class:`~nsr.model.PackedPrefixLoss`): k targets of one state cost one prompt
pass. Checkpoints are ``{output_dir}/{name}/checkpoint-{step}/`` with
config.json (the prompt settings included), model.safetensors, the tokenizer,
metrics.json, and training_state.json + optimizer.safetensors for ``resume``
(nothing pickled). On CUDA it trains in bf16; several GPUs via ``torchrun``
(DistributedDataParallel).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .config import BOOL, Config, Float, Int, Rule, param
from .examples import (MODES, TARGET_MODES, BatchSampler, VariableRenamer, convert_files, load_examples,
                       pack_batch)
from .safe_io import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINTS_DIR = os.path.join(ROOT, "training", "checkpoints")
MODEL_SIZE_NAMES = ("tiny", "small", "base")


@dataclass(frozen=True)
class TrainConfig(Config):
    # data
    traces: tuple = param((), "trace files (expert and/or DAgger)", Rule("paths", min_items=0))
    trace_weights: Optional[tuple] = param(None, "sampling weight per --traces file (e.g. oversample DAgger data)",
                                           Rule("floats", optional=True))
    data: tuple = param((), "examples files from training/prepare_data.py", Rule("paths", min_items=0))
    mode: str = param("one_step", "one child per target, or whole populations", Rule("str", choices=MODES))
    targets: str = param("all", "which children are targets", Rule("str", choices=TARGET_MODES))
    val_fraction: float = param(0.05, "share of problems held out for validation", Float(0.0, 1.0))
    max_prompt_members: Optional[int] = param(None, "population members shown in the prompt (default: the "
                                              "--init_from checkpoint's, else 32); saved in the checkpoint",
                                              Int(1, 4096, optional=True))
    # model
    model_size: str = param("small", "preset size", Rule("str", choices=MODEL_SIZE_NAMES))
    hidden_size: Optional[int] = param(None, "override the preset's hidden size", Int(8, 16384, optional=True))
    num_layers: Optional[int] = param(None, "override the preset's layers", Int(1, 256, optional=True))
    num_heads: Optional[int] = param(None, "override the preset's attention heads", Int(1, 256, optional=True))
    init_from: Optional[str] = param(None, "fine-tune this checkpoint instead of a new model",
                                     Rule("str", optional=True))
    # optimisation
    steps: int = param(2000, "optimizer steps", Int(1, 10**9))
    batch_size: int = param(32, "states per step (per process)", Int(1, 1_000_000))
    children_per_state: int = param(6, "targets per state per step", Int(1, 10_000))
    rename_variables: float = param(0.0, "chance a training state is shown as a problem with more variables, its "
                                         "own renamed at random (teaches a model trained on few variables to keep "
                                         "every variable of larger problems)", Float(0.0, 1.0))
    lr: float = param(1e-3, "peak learning rate", Float(0.0, 10.0, lo_open=True))
    min_lr_ratio: float = param(0.1, "final learning rate / peak (cosine decay)", Float(0.0, 1.0))
    warmup_steps: int = param(100, "linear warm-up steps", Int(0, 10**9))
    weight_decay: float = param(0.01, "AdamW weight decay", Float(0.0))
    grad_clip: float = param(1.0, "gradient norm clip", Float(0.0, lo_open=True))
    eval_every: int = param(250, "steps between validation losses", Int(1, 10**9))
    eval_states: int = param(512, "validation states per evaluation", Int(1, 10**9))
    save_every: int = param(1000, "steps between checkpoints", Int(1, 10**9))
    save_total_limit: int = param(2, "checkpoints kept (newest)", Int(1, 10**6))
    device: Optional[str] = param(None, "cpu, cuda, cuda:1 (default: cuda if available)", Rule("str", optional=True))
    precision: str = param("auto", "bf16 autocast or fp32 (auto: bf16 on a CUDA device that supports it, else fp32)",
                           Rule("str", choices=("auto", "bf16", "fp32")))
    num_threads: Optional[int] = param(None, "CPU threads for torch", Int(1, 4096, optional=True))
    seed: int = param(0, "initialisation and batch sampling", Int(0, 2**63 - 1))
    resume: bool = param(False, "continue from the latest checkpoint of --name", BOOL)
    # output
    name: str = param("default", "run name: checkpoints go to OUTPUT_DIR/NAME/", Rule("str"))
    output_dir: str = param(CHECKPOINTS_DIR, "folder of runs", Rule("str"))
    overwrite: bool = param(False, "replace an existing run of this name", BOOL)
    quiet: bool = param(False, "no progress bar or summary", BOOL)

    def validate(self):
        if not self.traces and not self.data and not self.resume:
            raise InputError("give traces or data (or resume)")
        if self.trace_weights is not None and len(self.trace_weights) != len(self.traces):
            raise InputError(f"trace_weights has {len(self.trace_weights)} values for {len(self.traces)} trace files")
        if self.trace_weights is not None and min(self.trace_weights) <= 0:
            raise InputError("trace_weights must be positive")
        if not self.name or self.name in (".", "..") or "/" in self.name or os.sep in self.name:
            raise InputError(f"name must be a plain folder name (no path separators, not '..'), got {self.name!r}")
        hidden, heads = self.model_shape()[:3:2]
        if hidden % heads or (hidden // heads) % 2:
            raise InputError(f"hidden size {hidden} must split into {heads} attention heads of even size")

    def model_shape(self):
        from .model import MODEL_SIZES

        h, nl, nh, _ = MODEL_SIZES[self.model_size]
        return self.hidden_size or h, self.num_layers or nl, self.num_heads or nh

    @property
    def run_dir(self) -> str:
        return os.path.join(self.output_dir, self.name)


# ----------------------------------------------------------------------------
# distributed (torchrun): the standard route, DistributedDataParallel


def setup_distributed(device_arg):
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        from .model import resolve_device

        return resolve_device(device_arg), 0, 1
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device_arg in (None, "cuda", "auto") or str(device_arg).startswith("cuda"))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    return dev, rank, world


# ----------------------------------------------------------------------------
# optimizer state <-> safetensors + JSON (nothing pickled)


def save_optimizer(opt, folder):
    from safetensors.torch import save_file

    sd = opt.state_dict()
    tensors = {f"{pid}.{k}": v.detach().cpu().contiguous() for pid, st in sd["state"].items() for k, v in st.items()}
    save_file(tensors, os.path.join(folder, "optimizer.safetensors"))
    return sd["param_groups"]


def load_optimizer(opt, folder, param_groups):
    from safetensors.torch import load_file

    tensors = load_file(os.path.join(folder, "optimizer.safetensors"))
    state = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": param_groups})


def latest_checkpoint(run_dir):
    if not os.path.isdir(run_dir):
        return None
    steps = [int(n[11:]) for n in os.listdir(run_dir) if n.startswith("checkpoint-") and n[11:].isdigit()
             and os.path.exists(os.path.join(run_dir, n, "training_state.json"))]
    return os.path.join(run_dir, f"checkpoint-{max(steps)}") if steps else None


def lr_at(step, cfg: TrainConfig):
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def to_tensors(batch, pad, device):
    import torch

    ids, pos, seg, rows, at, labels = pack_batch(*batch, pad)
    return [torch.from_numpy(a).to(device) for a in (ids, pos, seg, rows, at, labels)]


def evaluate_loss(loss_mod, val, cfg, pad, device, autocast):
    """Mean validation loss per target token over the first ``eval_states`` states (deterministic)."""
    import torch

    sampler = BatchSampler(val, cfg.batch_size, 10**9, None)
    tot, n, seen = 0.0, 0, 0
    loss_mod.eval()
    with torch.no_grad(), autocast():
        for batch in sampler.iterate_all():
            t = to_tensors(batch, pad, device)
            k = len(t[5])
            tot += float(loss_mod(*t)) * k
            n += k
            seen += len(batch[0])
            if seen >= cfg.eval_states:
                break
    loss_mod.train()
    return tot / max(n, 1)


def check_run_folder(cfg: TrainConfig):
    """Before any work: the run folder can be written, and an existing run is not silently replaced."""
    from . import safe_io

    if os.path.exists(cfg.output_dir) and not os.path.isdir(cfg.output_dir):
        raise InputError(f"{cfg.output_dir}: is a file, not an output folder")
    safe_io.check_output_file(os.path.join(cfg.run_dir, "checkpoint-0", "config.json"))
    if os.path.isdir(cfg.run_dir) and os.listdir(cfg.run_dir) and not (cfg.resume or cfg.overwrite):
        raise InputError(f"{cfg.run_dir}: a run of this name exists; pass --resume to continue it or --overwrite "
                         f"to replace it")


def _data(cfg: TrainConfig, vocab, max_members):
    if cfg.data:
        train = val = None
        for path in cfg.data:
            tr, va, meta = load_examples(path)
            if meta.get("mode", cfg.mode) != cfg.mode:
                raise InputError(f"{path}: examples are in {meta.get('mode')} mode, not {cfg.mode}")
            if meta.get("max_prompt_members", max_members) != max_members:
                raise InputError(f"{path}: examples were made with {meta.get('max_prompt_members')} prompt members, "
                                 f"the model uses {max_members}")
            train = tr if train is None else (train.extend(tr) or train)
            val = va if val is None else (val.extend(va) or val)
        return train, val, {"examples_files": [os.path.abspath(p) for p in cfg.data]}
    return convert_files(cfg.traces, vocab, cfg.mode, cfg.targets, max_members, cfg.val_fraction,
                         weights=cfg.trace_weights)


def train(cfg: TrainConfig) -> str:
    """Train (or fine-tune, or resume) a model; returns the last checkpoint folder."""
    import torch

    from .model import PackedPrefixLoss, attention_backends, load_checkpoint, make_config, new_model, save_checkpoint
    from .prompt import PromptConfig
    from .tokenizer import Vocab

    device, rank, world = setup_distributed(cfg.device)
    main_proc = rank == 0
    resume_from = latest_checkpoint(cfg.run_dir) if cfg.resume else None
    if cfg.resume and resume_from is None:
        raise InputError(f"{cfg.run_dir}: nothing to resume (no checkpoint with training_state.json)")
    state = {}
    if resume_from:
        with open(os.path.join(resume_from, "training_state.json")) as f:
            state = json.load(f)
        saved = {k: v for k, v in (state.get("config") or state.get("args") or {}).items() if k in ("traces", "trace_weights", "data", "mode",
                                                                   "targets", "val_fraction", "max_prompt_members")}
        cfg = cfg.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    elif main_proc:
        check_run_folder(cfg)
        if cfg.overwrite and os.path.isdir(cfg.run_dir):
            shutil.rmtree(cfg.run_dir)
    from .threads import configure_threads

    configure_threads(cfg.num_threads)
    say = print if main_proc and not cfg.quiet else (lambda *a: None)

    # model first (a bad --init_from fails before the data is read)
    vocab, ck = Vocab(), None
    if resume_from or cfg.init_from:
        ck = load_checkpoint(resume_from or cfg.init_from, device="cpu", dtype=torch.float32)
        if ck.mode != cfg.mode:
            raise InputError(f"{ck.path}: a {ck.mode} checkpoint cannot be trained in {cfg.mode} mode")
        model, vocab = ck.model, ck.vocab
    prompt = PromptConfig(cfg.max_prompt_members or (ck.prompt.max_members if ck else PromptConfig.max_members))
    if ck is None:
        h, nl, nh = cfg.model_shape()
        model = new_model(make_config(vocab, cfg.model_size, h, nl, nh, autoregressive=(cfg.mode == "autoregressive"),
                                      prompt=prompt), seed=cfg.seed)
    else:
        model.config.nsr = dict(getattr(model.config, "nsr", None) or {}, prompt=prompt.to_dict())

    # data
    t0 = time.time()
    train_ex, val_ex, data_stats = _data(cfg, vocab, prompt.max_members)
    if len(train_ex) == 0:
        raise InputError("the training set is empty")
    data_stats.update(train_states=len(train_ex), train_targets=train_ex.n_targets, train_tokens=train_ex.n_tokens,
                      val_states=len(val_ex), val_targets=val_ex.n_targets, val_problems=len(set(val_ex.problems)),
                      train_problems=len(set(train_ex.problems)))
    say(f"data: {len(train_ex)} train states ({train_ex.n_targets} targets, {len(set(train_ex.problems))} problems), "
        f"{len(val_ex)} validation states ({len(set(val_ex.problems))} problems) in {time.time() - t0:.1f}s")

    model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    loss_mod = PackedPrefixLoss(model)
    if world > 1:
        loss_mod = torch.nn.parallel.DistributedDataParallel(
            loss_mod, device_ids=[device.index] if device.type == "cuda" else None)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng([cfg.seed, rank])
    step, history = 0, []
    if resume_from:
        load_optimizer(opt, resume_from, state["param_groups"])
        step, history = state["step"], state["history"]
        if rank < len(state["rng_state"]):
            rng.bit_generator.state = state["rng_state"][rank]
        say(f"resumed from {resume_from} at step {step}")
    sampler = BatchSampler(train_ex, cfg.batch_size, cfg.children_per_state, rng,
                           VariableRenamer(vocab) if cfg.rename_variables else None, cfg.rename_variables)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"
                                           and torch.cuda.is_bf16_supported())

    def autocast():  # every forward: bf16 (on CPU too, so that path is tested without a GPU), SDPA without cuDNN
        stack = contextlib.ExitStack()
        stack.enter_context(attention_backends())
        if use_bf16:
            stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
        return stack

    from .cli import run_metadata

    meta = run_metadata()
    meta.update(config=cfg.to_dict(), n_params=n_params, data=data_stats, world_size=world, device=str(device),
                bf16=use_bf16)

    def save(step_now, val_loss):
        folder = os.path.join(cfg.run_dir, f"checkpoint-{step_now}")
        metrics = dict(meta, step=step_now, history=history,
                       final_train_loss=history[-1]["train_loss"] if history else None,  # the last window's mean
                       final_val_loss=val_loss)
        os.makedirs(folder, exist_ok=True)
        groups = save_optimizer(opt, folder)
        save_checkpoint(model, folder, {
            "metrics.json": metrics,
            "training_state.json": {"step": step_now, "history": history, "config": cfg.to_dict(),
                                    "param_groups": groups, "rng_state": [rng.bit_generator.state]},
        })
        olds = sorted(int(n[11:]) for n in os.listdir(cfg.run_dir) if n.startswith("checkpoint-") and n[11:].isdigit())
        for s in olds[: -cfg.save_total_limit]:  # keep the newest save_total_limit
            shutil.rmtree(os.path.join(cfg.run_dir, f"checkpoint-{s}"), ignore_errors=True)
        return folder

    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=step, disable=cfg.quiet or not main_proc, desc="train", unit="step")
    running, t_start, last_val, folder = [], time.time(), None, latest_checkpoint(cfg.run_dir)
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        batch = to_tensors(sampler.sample(), vocab.pad, device)
        with autocast():
            loss = loss_mod(*batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        running.append(float(loss.detach()))
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            entry = {"step": step, "train_loss": float(np.mean(running)), "lr": lr_at(step - 1, cfg),
                     "elapsed": time.time() - t_start}
            running = []
            if main_proc and len(val_ex):
                last_val = evaluate_loss(loss_mod.module if world > 1 else loss_mod, val_ex, cfg, vocab.pad, device,
                                         autocast)
                entry["val_loss"] = last_val
            history.append(entry)
            bar.set_postfix(train=f"{entry['train_loss']:.3f}", val=f"{last_val:.3f}" if last_val else "-")
        if main_proc and (step % cfg.save_every == 0 or step == cfg.steps):
            folder = save(step, last_val)
    bar.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if history:
        say(f"done: {step} steps, train loss {history[-1]['train_loss']:.4f}, "
            f"val loss {last_val if last_val is not None else float('nan'):.4f}; saved {folder}")
    return folder
