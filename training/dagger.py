#!/usr/bin/env python
"""The DAgger loop: roll out, relabel with the expert, aggregate, fine-tune, evaluate.

    python training/dagger.py --name dagger_default --init_checkpoint training/checkpoints/default \\
        --expert_traces T1.pkl.gz T2.pkl.gz --train_expressions TRAIN.pkl.gz \\
        --eval_expressions datasets/expressions/heldout_arith_100_c05.pkl.gz datasets/expressions/nguyen_12.pkl.gz \\
        --iterations 3 --beta_schedule 0.5 0.25 0 --label best_of_k --k 4 --finetune_steps 500

Iteration 0 evaluates the starting checkpoint (behaviour cloning; trained here
first with --bc_steps if --init_checkpoint is not given) and the BasicSR
expert. Iteration i >= 1: neural rollouts on --rollout_problems training
problems with mixing beta_i (each child from the expert with probability
beta_i), expert labels for every visited state, fine-tuning on the expert
traces plus all DAgger data so far (DAgger states weighted by
--dagger_weight), evaluation on the held-out sets. --control adds, per
iteration, a checkpoint fine-tuned as much on the expert traces alone. Writes
``{output_dir}/{name}/results.csv`` and ``solve_rate.png``; rerun with
--resume after an interruption to continue where it stopped.
"""
import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from nsr import safe_io  # noqa: E402
from nsr.cli import (ArgumentParser, nonneg_int, population_size, positive_float, positive_int, probability,  # noqa: E402
                     run_main, run_metadata)
from nsr.safe_io import InputError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv):
    p = ArgumentParser(description="Iterative DAgger for the neural proposer.")
    p.add_argument("--name", default="dagger")
    p.add_argument("--output_dir", default=os.path.join(HERE, "dagger_runs"))
    p.add_argument("--init_checkpoint", default=None, help="start here (else train behaviour cloning first)")
    p.add_argument("--expert_traces", nargs="+", required=True, help="BasicSR traces: the behaviour-cloning data")
    p.add_argument("--train_expressions", required=True, help="problems for the rollouts")
    p.add_argument("--eval_expressions", nargs="+", required=True, help="held-out problem sets")
    p.add_argument("--iterations", type=positive_int, default=3)
    p.add_argument("--beta_schedule", type=probability, nargs="+", default=None,
                   help="beta per iteration (default: 0.5 halving each iteration)")
    p.add_argument("--rollout_problems", type=positive_int, default=200)
    p.add_argument("--eval_problems", type=positive_int, default=None, help="first N of each eval set")
    p.add_argument("--eval_seeds", type=nonneg_int, nargs="+", default=[0])
    p.add_argument("--label", choices=["expert", "best_of_k"], default="best_of_k")
    p.add_argument("--k", type=positive_int, default=4)
    p.add_argument("--dagger_weight", type=positive_float, default=4.0,
                   help="sampling weight of DAgger states relative to expert states")
    p.add_argument("--targets", choices=["all", "ancestors", "improved"], default="improved",
                   help="target selection for training (as training/train.py --targets)")
    p.add_argument("--bc_steps", type=positive_int, default=2000)
    p.add_argument("--finetune_steps", type=positive_int, default=500)
    p.add_argument("--finetune_lr", type=positive_float, default=3e-4)
    p.add_argument("--train_batch_size", type=positive_int, default=32)
    p.add_argument("--population_size", type=population_size, default=20)
    p.add_argument("--num_generations", type=positive_int, default=50)
    p.add_argument("--batch_size", type=positive_int, default=32, help="problems per model call")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--control", action="store_true",
                   help="also fine-tune a control on the expert traces alone, with the same steps and learning "
                        "rate each iteration, and evaluate it: separates the effect of the DAgger data from "
                        "that of the extra training")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.beta_schedule is None:
        args.beta_schedule = [0.5 * 0.5 ** i for i in range(args.iterations)]
    if len(args.beta_schedule) != args.iterations:
        p.error(f"--beta_schedule has {len(args.beta_schedule)} values for {args.iterations} iterations")
    return args


class RunState:
    """Which steps are done, saved atomically after each one (for --resume)."""

    def __init__(self, folder, args, resume):
        self.path = os.path.join(folder, "state.json")
        self.data = {"done": {}, "results": []}
        if os.path.exists(self.path):
            if not resume:
                raise InputError(f"{folder}: a run of this name exists; use --resume or another --name")
            with open(self.path) as f:
                self.data = json.load(f)
        self.data["args"] = {k: v for k, v in vars(args).items() if k != "resume"}
        self.save()

    def done(self, key):
        return self.data["done"].get(key)

    def mark(self, key, value=True):
        self.data["done"][key] = value
        self.save()

    def add_results(self, rows):
        self.data["results"] += rows
        self.save()

    def save(self):
        safe_io.atomic_write_bytes(self.path, json.dumps(self.data, indent=1, default=str).encode())


def evaluate_checkpoint(checkpoint, eval_sets, args, iteration, beta_label, method="neural"):
    from nsr.evaluation import run_neural, summarize

    rows = []
    for name, opset, consts, records in eval_sets:
        res = run_neural(records, args.eval_seeds, opset, args.population_size, args.num_generations, checkpoint,
                         batch_size=args.batch_size, constants=consts, device=args.device)
        s = summarize(res)
        rows.append({"iteration": iteration, "method": method, "eval_set": name, "checkpoint": checkpoint,
                     "beta": beta_label, **s})
    return rows


def evaluate_expert(eval_sets, args):
    from nsr.evaluation import run_basic, summarize

    rows = []
    for name, opset, consts, records in eval_sets:
        s = summarize(run_basic(records, args.eval_seeds, opset, args.population_size, args.num_generations,
                                constants=consts))
        rows.append({"iteration": "expert", "method": "basic_sr", "eval_set": name, "checkpoint": "",
                     "beta": "", **s})
    return rows


CSV_FIELDS = ["iteration", "method", "eval_set", "beta", "solve_rate", "solved", "runs", "median_train_mse",
              "well_formed_pct", "time_per_expression", "dagger_states", "checkpoint"]


def write_outputs(folder, results):
    path = os.path.join(folder, "results.csv")
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in results:
            w.writerow(r)
    os.replace(tmp, path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in sorted({r["eval_set"] for r in results}):
        pts = sorted((r["iteration"], r["solve_rate"]) for r in results
                     if r["eval_set"] == name and r["method"] == "neural")
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"neural SR: {name}")[0]
        ctl = pts[:1] + sorted((r["iteration"], r["solve_rate"]) for r in results
                               if r["eval_set"] == name and r["method"] == "control")
        if len(ctl) > 1:
            ax.plot([p[0] for p in ctl], [p[1] for p in ctl], marker="x", linestyle=":", color=line.get_color(),
                    label=f"control (expert data only): {name}")
        expert = [r["solve_rate"] for r in results if r["eval_set"] == name and r["method"] == "basic_sr"]
        if expert:
            ax.axhline(expert[0], linestyle="--", color=line.get_color(), label=f"BasicSR: {name}")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlabel("DAgger iteration (0 = behaviour cloning)")
    ax.set_ylabel("solve rate (R² ≥ 0.99999 on fresh points)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "solve_rate.png.tmp"), format="png", dpi=120)
    plt.close(fig)
    os.replace(os.path.join(folder, "solve_rate.png.tmp"), os.path.join(folder, "solve_rate.png"))


def main(argv):
    args = parse_args(argv)
    from nsr.dagger import Relabeler
    from nsr.datasets import file_constants, file_operator_set, load_expressions
    from nsr.model import find_checkpoint
    from nsr.runner import RunSpec, run_traces
    from nsr.traces import load_traces, seed_for
    from training import train as train_script

    # check every input before any work
    for path in args.expert_traces:
        load_traces(path)
    train_data = load_expressions(args.train_expressions)
    eval_sets = []
    for path in args.eval_expressions:
        d = load_expressions(path)
        recs = d["records"][: args.eval_problems] if args.eval_problems else d["records"]
        name = os.path.basename(path).replace(".pkl.gz", "")
        eval_sets.append((name, file_operator_set(d["metadata"], None, path), file_constants(d["metadata"], None, path),
                          recs))
    if args.init_checkpoint:
        find_checkpoint(args.init_checkpoint)
    folder = os.path.join(args.output_dir, args.name)
    safe_io.ensure_output_dir(folder)
    state = RunState(folder, args, args.resume)
    ck_dir = os.path.join(folder, "checkpoints")
    say = (lambda *a: None) if args.quiet else print

    def train(run_name, steps, traces, weights, init_from=None, lr=None):
        argv = ["--traces", *traces, "--trace_weights", *map(str, weights), "--name", run_name, "--output_dir", ck_dir,
                "--steps", str(steps), "--batch_size", str(args.train_batch_size), "--seed", str(args.seed),
                "--eval_every", str(max(1, steps // 4)), "--save_every", str(steps), "--targets", args.targets]
        if init_from:
            argv += ["--init_from", init_from]
        if lr:
            argv += ["--lr", str(lr), "--warmup_steps", "20"]
        if args.device:
            argv += ["--device", args.device]
        if args.quiet:
            argv += ["--quiet"]
        if os.path.isdir(os.path.join(ck_dir, run_name)):
            argv += ["--resume"]  # an interrupted fine-tune continues
        if train_script.main(argv) not in (0, None):
            raise InputError(f"training {run_name} failed")
        return find_checkpoint(os.path.join(ck_dir, run_name))

    # iteration 0: behaviour cloning
    current = state.done("bc")
    if not current:
        current = args.init_checkpoint and find_checkpoint(args.init_checkpoint)
        if not current:
            say("training behaviour cloning ...")
            current = train("bc", args.bc_steps, args.expert_traces, [1.0] * len(args.expert_traces))
        state.mark("bc", current)
    if not state.done("eval_expert"):
        say("evaluating BasicSR ...")
        state.add_results(evaluate_expert(eval_sets, args))
        state.mark("eval_expert")
    if not state.done("eval_0"):
        say(f"evaluating iteration 0 ({current}) ...")
        state.add_results(evaluate_checkpoint(current, eval_sets, args, 0, ""))
        state.mark("eval_0")
    write_outputs(folder, state.data["results"])

    dagger_files = [state.done(f"relabel_{i}") for i in range(1, args.iterations + 1) if state.done(f"relabel_{i}")]
    opset = file_operator_set(train_data["metadata"], None, args.train_expressions)
    consts = file_constants(train_data["metadata"], None, args.train_expressions)
    for it in range(1, args.iterations + 1):
        beta = args.beta_schedule[it - 1]
        it_dir = os.path.join(folder, f"iter{it}")
        os.makedirs(it_dir, exist_ok=True)
        if state.done(f"finetune_{it}"):
            current = state.done(f"finetune_{it}")
        else:
            rollout = os.path.join(it_dir, "rollout.pkl.gz")
            if not state.done(f"rollout_{it}"):
                rng = seed_for(args.seed, 1000 + it)  # a fresh subset of training problems per iteration
                n = min(args.rollout_problems, len(train_data["records"]))
                idx = np.sort(rng.choice(len(train_data["records"]), size=n, replace=False))
                indexed = [(int(i), train_data["records"][i]) for i in idx]
                spec = RunSpec(population_size=args.population_size, num_generations=args.num_generations,
                               operator_set=opset, constants=consts, seed=args.seed + it, checkpoint=current,
                               batch_size=args.batch_size, device=args.device, beta=beta)
                say(f"iteration {it}: rollouts on {n} problems with beta={beta:g} ...")
                run_traces(spec, indexed, rollout, run_metadata(args), resume=True, quiet=args.quiet)
                state.mark(f"rollout_{it}", rollout)
            labeled = os.path.join(it_dir, "rollout_dagger.pkl.gz")
            if not state.done(f"relabel_{it}"):
                data = load_traces(rollout)
                rl = Relabeler(args.label, args.k)
                recs = [rl.relabel_record(r, args.seed + it, i) for i, r in enumerate(data["records"])]
                meta = dict(data["metadata"], dagger=True, original_source="neural_sr",
                            relabel_params={"label": rl.label, "k": rl.k}, states=rl.states)
                safe_io.save(labeled, "traces", meta, recs)
                state.mark(f"relabel_{it}", labeled)
                dagger_files.append(labeled)
            say(f"iteration {it}: fine-tuning on {len(args.expert_traces)} expert + {len(dagger_files)} DAgger files ...")
            current = train(f"iter{it}", args.finetune_steps, list(args.expert_traces) + dagger_files,
                            [1.0] * len(args.expert_traces) + [args.dagger_weight] * len(dagger_files),
                            init_from=current, lr=args.finetune_lr)
            state.mark(f"finetune_{it}", current)
        if not state.done(f"eval_{it}"):
            say(f"iteration {it}: evaluating {current} ...")
            n_states = sum(load_traces(f)["metadata"].get("states", 0) for f in dagger_files[:it])
            rows = evaluate_checkpoint(current, eval_sets, args, it, beta)
            for r in rows:
                r["dagger_states"] = n_states
            state.add_results(rows)
            state.mark(f"eval_{it}")
        if args.control:
            if not state.done(f"control_{it}"):
                prev = state.done(f"control_{it - 1}") if it > 1 else state.done("bc")
                say(f"iteration {it}: control: fine-tuning on the expert traces only ...")
                state.mark(f"control_{it}", train(f"control{it}", args.finetune_steps, list(args.expert_traces),
                                                  [1.0] * len(args.expert_traces), init_from=prev,
                                                  lr=args.finetune_lr))
            if not state.done(f"eval_control_{it}"):
                say(f"iteration {it}: evaluating the control {state.done(f'control_{it}')} ...")
                state.add_results(evaluate_checkpoint(state.done(f"control_{it}"), eval_sets, args, it, "",
                                                      method="control"))
                state.mark(f"eval_control_{it}")
        write_outputs(folder, state.data["results"])
    say(f"wrote {os.path.join(folder, 'results.csv')} and solve_rate.png")
    if not args.quiet:
        from nsr.report import table

        rows = [[r["iteration"], r["method"], r["eval_set"], r["solve_rate"], r["median_train_mse"],
                 r.get("well_formed_pct") or "-", r["time_per_expression"]] for r in state.data["results"]]
        print(table(rows, ["iter", "method", "eval set", "solve rate", "median MSE", "well-formed %", "s/expr"]))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
