#!/usr/bin/env python
"""Train the tiny causal LM on BasicSR (and DAgger) traces.

    python training/train.py --traces datasets/traces/gen50_train_arith_2k_c05.pkl.gz --name default --steps 3000
    python training/train.py --data examples.pkl.gz --name mymodel          # from prepare_data.py output
    torchrun --nproc_per_node 4 training/train.py --traces ... --device cuda  # several GPUs (DDP)

Checkpoints: ``{output_dir}/{name}/checkpoint-{step}/`` with config.json,
model.safetensors, the tokenizer, metrics.json (train/val loss history and the
command), and training_state.json + optimizer.safetensors for ``--resume``.
"""
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from nsr.cli import (ArgumentParser, nonneg_float, nonneg_int, positive_float, positive_int, probability, run_main,  # noqa: E402
                     run_metadata)
from nsr.safe_io import InputError  # noqa: E402
from training.data import MODES, TARGET_MODES, BatchSampler, convert_files, load_examples, pack_batch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv):
    p = ArgumentParser(description="Train the neural proposer on SR traces.")
    src = p.add_argument_group("data")
    src.add_argument("--traces", nargs="+", default=[], help="trace files (expert and/or DAgger)")
    src.add_argument("--trace_weights", type=positive_float, nargs="+", default=None,
                     help="sampling weight per --traces file (e.g. oversample DAgger data)")
    src.add_argument("--data", nargs="+", default=[], help="examples files from training/prepare_data.py")
    src.add_argument("--mode", choices=MODES, default="one_step")
    src.add_argument("--targets", choices=TARGET_MODES, default="all")
    src.add_argument("--val_fraction", type=probability, default=0.05)
    src.add_argument("--max_prompt_members", type=positive_int, default=32)
    m = p.add_argument_group("model")
    m.add_argument("--model_size", choices=["tiny", "small", "base"], default="small")
    m.add_argument("--hidden_size", type=positive_int, default=None)
    m.add_argument("--num_layers", type=positive_int, default=None)
    m.add_argument("--num_heads", type=positive_int, default=None)
    m.add_argument("--init_from", default=None, help="fine-tune from this checkpoint instead of a new model")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=positive_int, default=2000)
    t.add_argument("--batch_size", type=positive_int, default=32, help="states per step (per process)")
    t.add_argument("--children_per_state", type=positive_int, default=6, help="targets per state per step")
    t.add_argument("--lr", type=positive_float, default=1e-3)
    t.add_argument("--min_lr_ratio", type=probability, default=0.1)
    t.add_argument("--warmup_steps", type=nonneg_int, default=100)
    t.add_argument("--weight_decay", type=nonneg_float, default=0.01)
    t.add_argument("--grad_clip", type=positive_float, default=1.0)
    t.add_argument("--eval_every", type=positive_int, default=250)
    t.add_argument("--eval_states", type=positive_int, default=512, help="validation states per evaluation")
    t.add_argument("--save_every", type=positive_int, default=1000)
    t.add_argument("--save_total_limit", type=positive_int, default=2)
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    t.add_argument("--num_threads", type=positive_int, default=None, help="CPU threads for torch")
    t.add_argument("--seed", type=nonneg_int, default=0)
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint of --name")
    o = p.add_argument_group("output")
    o.add_argument("--name", default="default")
    o.add_argument("--output_dir", default=os.path.join(HERE, "checkpoints"))
    o.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if not args.traces and not args.data and not args.resume:
        p.error("give --traces or --data (or --resume)")
    if args.trace_weights and len(args.trace_weights) != len(args.traces):
        p.error(f"--trace_weights has {len(args.trace_weights)} values for {len(args.traces)} --traces files")
    return args


# ----------------------------------------------------------------------------
# distributed (torchrun): the standard route, DistributedDataParallel


def setup_distributed(device_arg):
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        from nsr.model import resolve_device

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


def lr_at(step, args):
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    frac = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def to_tensors(batch, pad, device):
    import torch

    ids, pos, seg, rows, at, labels = pack_batch(*batch, pad)
    return [torch.from_numpy(a).to(device) for a in (ids, pos, seg, rows, at, labels)]


def evaluate(loss_mod, val, args, pad, device, autocast):
    """Mean validation loss per target token over the first ``eval_states`` states (deterministic)."""
    import torch

    sampler = BatchSampler(val, args.batch_size, 10**9, None)
    tot, n, seen = 0.0, 0, 0
    loss_mod.eval()
    with torch.no_grad(), autocast():
        for batch in sampler.iterate_all():
            t = to_tensors(batch, pad, device)
            k = len(t[5])
            tot += float(loss_mod(*t)) * k
            n += k
            seen += len(batch[0])
            if seen >= args.eval_states:
                break
    loss_mod.train()
    return tot / max(n, 1)


def main(argv):
    args = parse_args(argv)
    import contextlib

    import torch

    from nsr.model import PackedPrefixLoss, load_checkpoint, make_config, new_model, save_checkpoint
    from nsr.tokenizer import Vocab

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device, rank, world = setup_distributed(args.device)
    main_proc = rank == 0
    vocab = Vocab()
    run_dir = os.path.join(args.output_dir, args.name)
    resume_from = latest_checkpoint(run_dir) if args.resume else None
    if args.resume and resume_from is None:
        raise InputError(f"{run_dir}: nothing to resume (no checkpoint with training_state.json)")
    state = {}
    if resume_from:
        with open(os.path.join(resume_from, "training_state.json")) as f:
            state = json.load(f)
        saved = state["args"]
        for k in ("traces", "trace_weights", "data", "mode", "targets", "val_fraction", "max_prompt_members"):
            setattr(args, k, saved[k])

    # data
    t0 = time.time()
    if args.data:
        train, val = None, None
        for path in args.data:
            tr, va, meta = load_examples(path)
            if meta.get("mode", args.mode) != args.mode:
                raise InputError(f"{path}: examples are in {meta.get('mode')} mode, not {args.mode}")
            train = tr if train is None else (train.extend(tr) or train)
            val = va if val is None else (val.extend(va) or val)
        data_stats = {"examples_files": [os.path.abspath(p) for p in args.data]}
    else:
        train, val, data_stats = convert_files(args.traces, vocab, args.mode, args.targets, args.max_prompt_members,
                                               args.val_fraction, weights=args.trace_weights)
    if len(train) == 0:
        raise InputError("the training set is empty")
    data_stats.update(train_states=len(train), train_targets=train.n_targets, train_tokens=train.n_tokens,
                      val_states=len(val), val_targets=val.n_targets, val_problems=len(set(val.problems)),
                      train_problems=len(set(train.problems)))
    if main_proc and not args.quiet:
        print(f"data: {len(train)} train states ({train.n_targets} targets, {len(set(train.problems))} problems), "
              f"{len(val)} validation states ({len(set(val.problems))} problems) in {time.time() - t0:.1f}s")

    # model
    if resume_from:
        model = load_checkpoint(resume_from, device="cpu", dtype=torch.float32).model
    elif args.init_from:
        ck = load_checkpoint(args.init_from, device="cpu", dtype=torch.float32)
        if ck.mode != args.mode:
            raise InputError(f"{args.init_from}: a {ck.mode} checkpoint cannot be fine-tuned in {args.mode} mode")
        model = ck.model
    else:
        cfg = make_config(vocab, args.model_size, args.hidden_size, args.num_layers, args.num_heads,
                          autoregressive=(args.mode == "autoregressive"))
        model = new_model(cfg, seed=args.seed)
    model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    loss_mod = PackedPrefixLoss(model)
    if world > 1:
        loss_mod = torch.nn.parallel.DistributedDataParallel(
            loss_mod, device_ids=[device.index] if device.type == "cuda" else None)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng([args.seed, rank])
    step, history = 0, []
    if resume_from:
        load_optimizer(opt, resume_from, state["param_groups"])
        step, history = state["step"], state["history"]
        rng.bit_generator.state = state["rng_state"][rank] if rank < len(state["rng_state"]) else rng.bit_generator.state
        if main_proc and not args.quiet:
            print(f"resumed from {resume_from} at step {step}")
    sampler = BatchSampler(train, args.batch_size, args.children_per_state, rng)
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()

    meta = run_metadata(args)
    meta.update(n_params=n_params, data=data_stats, world_size=world, device=str(device), bf16=use_bf16)

    def save(step_now, val_loss):
        folder = os.path.join(run_dir, f"checkpoint-{step_now}")
        # the mean training loss over the last evaluation window
        metrics = dict(meta, step=step_now, history=history,
                       final_train_loss=history[-1]["train_loss"] if history else None,
                       final_val_loss=val_loss)
        os.makedirs(folder, exist_ok=True)
        groups = save_optimizer(opt, folder)
        save_checkpoint(model, folder, {
            "metrics.json": metrics,
            "training_state.json": {"step": step_now, "history": history, "args": vars(args), "param_groups": groups,
                                    "rng_state": [rng.bit_generator.state]},
        })
        # keep the newest save_total_limit checkpoints
        olds = sorted((int(n[11:]) for n in os.listdir(run_dir) if n.startswith("checkpoint-") and n[11:].isdigit()))
        for s in olds[: -args.save_total_limit]:
            import shutil

            shutil.rmtree(os.path.join(run_dir, f"checkpoint-{s}"), ignore_errors=True)
        return folder

    from tqdm import tqdm

    bar = tqdm(total=args.steps, initial=step, disable=args.quiet or not main_proc, desc="train", unit="step")
    running, t_start, last_val, folder = [], time.time(), None, None
    while step < args.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        batch = to_tensors(sampler.sample(), vocab.pad, device)
        with autocast():
            loss = loss_mod(*batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        step += 1
        running.append(float(loss.detach()))
        bar.update(1)
        if step % args.eval_every == 0 or step == args.steps:
            entry = {"step": step, "train_loss": float(np.mean(running)), "lr": lr_at(step - 1, args),
                     "elapsed": time.time() - t_start}
            running = []
            if main_proc and len(val):
                last_val = evaluate(loss_mod.module if world > 1 else loss_mod, val, args, vocab.pad, device, autocast)
                entry["val_loss"] = last_val
            history.append(entry)
            bar.set_postfix(train=f"{entry['train_loss']:.3f}", val=f"{last_val:.3f}" if last_val else "-")
        if main_proc and (step % args.save_every == 0 or step == args.steps):
            folder = save(step, last_val)
    bar.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if main_proc and not args.quiet:
        print(f"done: {step} steps, train loss {history[-1]['train_loss']:.4f}, "
              f"val loss {last_val if last_val is not None else float('nan'):.4f}; saved {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
