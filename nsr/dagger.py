"""The DAgger loop: roll out, relabel with the expert, aggregate, fine-tune, evaluate.

Iteration 0 evaluates the starting checkpoint (behaviour cloning; trained here
first if no ``init_checkpoint`` is given) and the BasicSR expert. Iteration
i >= 1: neural rollouts on ``rollout_problems`` training problems with mixing
beta_i (each child from the expert with probability beta_i), expert labels for
every visited state, fine-tuning on the expert traces plus all DAgger data so
far (DAgger states weighted by ``dagger_weight``), evaluation on the held-out
sets. ``control`` adds, per iteration, a checkpoint fine-tuned as much on the
expert traces alone, to tell the DAgger data's effect from more training.

Every step is the library's own: rollouts are :func:`~nsr.drivers.write_traces`,
labels :func:`~nsr.relabel.relabel_file`, training :func:`~nsr.trainer.train`,
evaluation :func:`~nsr.evaluation.evaluate`. Writes
``{output_dir}/{name}/results.csv`` and ``solve_rate.png``; ``resume``
continues an interrupted run where it stopped (``state.json`` records each
finished step).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import safe_io
from .config import BOOL, Config, EvolutionConfig, Float, Int, RunConfig, Rule, SamplingConfig, param
from .relabel import LABELS
from .safe_io import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = dataclasses.MISSING


@dataclass(frozen=True)
class DAggerConfig(Config):
    expert_traces: tuple = param(REQUIRED, "BasicSR traces: the behaviour-cloning data", Rule("paths"))
    train_expressions: tuple = param(REQUIRED, "problems for the rollouts: one file per family (each run with "
                                                "its own operator set and constants)", Rule("paths"))
    eval_expressions: tuple = param(REQUIRED, "held-out problem sets", Rule("paths"))
    dagger_traces: tuple = param((), "DAgger files of earlier runs (dagger_relabel.py output), aggregated with this "
                                     "run's own at --dagger_weight: DAgger keeps every state it has labeled",
                                 Rule("paths", min_items=0))
    name: str = param("dagger", "run name: results go to OUTPUT_DIR/NAME/", Rule("str"))
    output_dir: str = param(os.path.join(ROOT, "training", "dagger_runs"), "folder of runs", Rule("str"))
    init_checkpoint: Optional[str] = param(None, "start here (else train behaviour cloning first)",
                                           Rule("str", optional=True))
    iterations: int = param(3, "DAgger iterations", Int(1, 1000))
    beta_schedule: Optional[tuple] = param(None, "beta per iteration (default: 0.5 halving each iteration)",
                                           Rule("floats", 0.0, 1.0, optional=True))
    rollout_problems: int = param(200, "training problems rolled out per iteration (split over the "
                                       "--train_expressions files)", Int(1, 10**8))
    eval_problems: Optional[int] = param(None, "first N of each eval set", Int(1, 10**8, optional=True))
    eval_seeds: tuple = param((0,), "seeds of the evaluation runs", Rule("ints", 0))
    label: str = param("best_of_k", "expert labels", Rule("str", choices=LABELS))
    k: int = param(4, "candidates per child slot for best_of_k", Int(1, 1000))
    dagger_weight: float = param(4.0, "sampling weight of DAgger states relative to expert states",
                                 Float(0.0, lo_open=True))
    targets: str = param("improved", "target selection for training (as train.py --targets)",
                         Rule("str", choices=("all", "ancestors", "improved")))
    bc_steps: int = param(2000, "behaviour-cloning steps (without --init_checkpoint)", Int(1, 10**9))
    finetune_steps: int = param(500, "fine-tuning steps per iteration", Int(1, 10**9))
    finetune_lr: float = param(3e-4, "fine-tuning learning rate", Float(0.0, 10.0, lo_open=True))
    train_batch_size: int = param(32, "states per training step", Int(1, 1_000_000))
    rename_variables: float = param(0.0, "chance a training state is shown with its variables renamed into a "
                                         "larger problem's (as train.py --rename_variables)", Float(0.0, 1.0))
    batch_size: int = param(32, "problems per model call (rollouts and evaluation)", Int(1, 100_000))
    device: Optional[str] = param(None, "torch device", Rule("str", optional=True))
    executor: str = param("local", "where rollouts and relabeling run (ray: a Ray cluster)",
                          Rule("str", choices=("local", "ray")))
    ray_address: Optional[str] = param(None, "Ray cluster to join (default: a local one)", Rule("str", optional=True))
    num_workers: Optional[int] = param(None, "processes for relabeling (default: the cores this process may use)",
                                       Int(1, 4096, optional=True))
    seed: int = param(0, "seeds rollouts, labels and training", Int(0, 2**62))
    control: bool = param(False, "also fine-tune a control on the expert traces alone, with the same steps and "
                                 "learning rate each iteration, and evaluate it", BOOL)
    resume: bool = param(False, "continue an interrupted run", BOOL)
    quiet: bool = param(False, "no progress bars", BOOL)

    def validate(self):
        if self.beta_schedule is not None and len(self.beta_schedule) != self.iterations:
            raise InputError(f"beta_schedule has {len(self.beta_schedule)} values for {self.iterations} iterations")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise InputError(f"name must be a plain folder name, got {self.name!r}")

    @property
    def betas(self) -> tuple:
        return self.beta_schedule or tuple(0.5 * 0.5 ** i for i in range(self.iterations))


class RunState:
    """Which steps are done, saved atomically after each one (for resume)."""

    def __init__(self, folder, config: dict, resume: bool):
        self.path = os.path.join(folder, "state.json")
        self.data = {"done": {}, "results": []}
        if os.path.exists(self.path):
            if not resume:
                raise InputError(f"{folder}: a run of this name exists; use --resume or another --name")
            try:
                with open(self.path) as f:
                    self.data = json.load(f)
            except (OSError, ValueError) as e:
                raise InputError(f"{self.path}: unreadable ({str(e)[:200]})") from None
            if not isinstance(self.data, dict) or not isinstance(self.data.get("done"), dict):
                raise InputError(f"{self.path}: not a DAgger run state")
        self.data["config"] = config
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


CSV_FIELDS = ["iteration", "method", "eval_set", "beta", "solve_rate", "solved", "runs", "median_train_mse",
              "well_formed_pct", "time_per_expression", "dagger_states", "checkpoint"]


def write_outputs(folder, results):
    """results.csv and solve_rate.png (solve rate per iteration, expert and control as references)."""
    path = os.path.join(folder, "results.csv")
    with open(path + ".tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in results:
            w.writerow(r)
    os.replace(path + ".tmp", path)
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


class EvalSet:
    """A held-out expressions file with the operator set and constants it is run with."""

    def __init__(self, path, limit=None):
        from .datasets import file_constants, file_operator_set, load_expressions

        d = load_expressions(path)
        self.name = os.path.basename(path).replace(".pkl.gz", "")
        self.records = d["records"][:limit] if limit else d["records"]
        self.operator_set = file_operator_set(d["metadata"], None, path)
        self.constants = file_constants(d["metadata"], None, path)


def run_dagger(cfg: DAggerConfig, evolution: EvolutionConfig, metadata: Optional[dict] = None) -> str:
    """Run (or resume) the loop; returns the run folder."""
    from .cli import run_metadata
    from .drivers import file_jobs, write_traces
    from .evaluation import evaluate, summarize
    from .model import find_checkpoint
    from .relabel import Relabeler, relabel_file
    from .search import Searcher
    from .traces import load_traces, seed_for
    from .threads import cores_available
    from .trainer import TrainConfig, train

    metadata = metadata or run_metadata()
    # check every input before any work
    for path in cfg.expert_traces:
        load_traces(path)
    prior_states = 0
    for path in cfg.dagger_traces:
        meta = load_traces(path)["metadata"]
        if meta.get("dagger") is not True:
            raise InputError(f"{path}: not a DAgger file (--dagger_traces takes dagger_relabel.py output)")
        prior_states += meta.get("states", 0)
    train_sets = [EvalSet(p) for p in cfg.train_expressions]
    eval_sets = [EvalSet(p, cfg.eval_problems) for p in cfg.eval_expressions]
    if cfg.init_checkpoint:
        find_checkpoint(cfg.init_checkpoint)
    folder = os.path.join(cfg.output_dir, cfg.name)
    safe_io.ensure_output_dir(folder)
    config = {k: v for k, v in cfg.to_dict().items() if k != "resume"}  # a resume that does nothing changes nothing
    state = RunState(folder, {"dagger": config, "evolution": evolution.to_dict()}, cfg.resume)
    ck_dir = os.path.join(folder, "checkpoints")
    say = (lambda *a: None) if cfg.quiet else print
    workers = cfg.num_workers or cores_available()

    def fine_tune(run_name, steps, traces, weights, init_from=None, lr=None):
        tc = TrainConfig(traces=tuple(traces), trace_weights=tuple(weights), name=run_name, output_dir=ck_dir,
                         steps=steps, batch_size=cfg.train_batch_size, seed=cfg.seed, eval_every=max(1, steps // 4),
                         save_every=steps, targets=cfg.targets, init_from=init_from, device=cfg.device,
                         rename_variables=cfg.rename_variables,
                         quiet=cfg.quiet, resume=os.path.isdir(os.path.join(ck_dir, run_name)),  # continue a cut one
                         **({"lr": lr, "warmup_steps": 20} if lr else {}))
        return train(tc)

    def sampling(checkpoint, beta=0.0):
        return SamplingConfig(checkpoint=checkpoint, device=cfg.device, beta=beta)

    def evaluate_method(checkpoint, iteration, beta_label, method):
        rows = []
        for es in eval_sets:
            evo = evolution.replace(operator_set=es.operator_set, constants=es.constants)
            searcher = Searcher(evo, sampling(checkpoint) if checkpoint else None)
            s = summarize(evaluate(searcher, es.records, cfg.eval_seeds, cfg.batch_size))
            rows.append({"iteration": iteration, "method": method, "eval_set": es.name, "checkpoint": checkpoint or "",
                         "beta": beta_label, **s})
        return rows

    # iteration 0: behaviour cloning, and the expert for reference
    current = state.done("bc")
    if not current:
        current = cfg.init_checkpoint and find_checkpoint(cfg.init_checkpoint)
        if not current:
            say("training behaviour cloning ...")
            current = fine_tune("bc", cfg.bc_steps, cfg.expert_traces, [1.0] * len(cfg.expert_traces))
        state.mark("bc", current)
    if not state.done("eval_expert"):
        say("evaluating BasicSR ...")
        state.add_results(evaluate_method(None, "expert", "", "basic_sr"))
        state.mark("eval_expert")
    if not state.done("eval_0"):
        say(f"evaluating iteration 0 ({current}) ...")
        state.add_results(evaluate_method(current, 0, "", "neural"))
        state.mark("eval_0")
    write_outputs(folder, state.data["results"])

    dagger_files = list(cfg.dagger_traces) + [f for i in range(1, cfg.iterations + 1)
                                              for f in (state.done(f"relabel_{i}") or [])]
    for it in range(1, cfg.iterations + 1):
        beta = cfg.betas[it - 1]
        it_dir = os.path.join(folder, f"iter{it}")
        os.makedirs(it_dir, exist_ok=True)
        if state.done(f"finetune_{it}"):
            current = state.done(f"finetune_{it}")
        else:
            rollouts = state.done(f"rollout_{it}")
            if not rollouts:
                rollouts = []
                per_set = max(1, cfg.rollout_problems // len(train_sets))
                for k, ts in enumerate(train_sets):
                    rng = seed_for(cfg.seed, 1000 * (k + 1) + it)  # a fresh subset of each family per iteration
                    n = min(per_set, len(ts.records))
                    idx = np.sort(rng.choice(len(ts.records), size=n, replace=False))
                    jobs = file_jobs([ts.records[i] for i in idx], cfg.seed + it, indices=idx.tolist())
                    evo = evolution.replace(operator_set=ts.operator_set, constants=ts.constants,
                                            collect_trajectory=True)
                    path = os.path.join(it_dir, f"rollout_{ts.name}.pkl.gz")
                    say(f"iteration {it}: rollouts on {n} problems of {ts.name} with beta={beta:g} ...")
                    write_traces(Searcher(evo, sampling(current, beta)), jobs, path, metadata,
                                 RunConfig(seed=cfg.seed + it, batch_size=cfg.batch_size, quiet=cfg.quiet,
                                           executor=cfg.executor, ray_address=cfg.ray_address),
                                 resume=os.path.exists(path + ".partial"), overwrite=True)
                    rollouts.append(path)
                state.mark(f"rollout_{it}", rollouts)
            labeled = state.done(f"relabel_{it}")
            if not labeled:
                labeled = []
                for path in rollouts:
                    out = path.replace(".pkl.gz", "_dagger.pkl.gz")
                    relabel_file(path, out, Relabeler(cfg.label, cfg.k, cfg.seed + it), metadata, overwrite=True,
                                 quiet=cfg.quiet, executor=cfg.executor, num_workers=workers,
                                 ray_address=cfg.ray_address)
                    labeled.append(out)
                state.mark(f"relabel_{it}", labeled)
                dagger_files.extend(labeled)
            say(f"iteration {it}: fine-tuning on {len(cfg.expert_traces)} expert + {len(dagger_files)} DAgger files ...")
            current = fine_tune(f"iter{it}", cfg.finetune_steps, list(cfg.expert_traces) + dagger_files,
                                [1.0] * len(cfg.expert_traces) + [cfg.dagger_weight] * len(dagger_files),
                                init_from=current, lr=cfg.finetune_lr)
            state.mark(f"finetune_{it}", current)
        if not state.done(f"eval_{it}"):
            say(f"iteration {it}: evaluating {current} ...")
            n_states = prior_states + sum(load_traces(f)["metadata"].get("states", 0) for i in range(1, it + 1)
                           for f in state.done(f"relabel_{i}") or [])
            rows = evaluate_method(current, it, beta, "neural")
            for r in rows:
                r["dagger_states"] = n_states
            state.add_results(rows)
            state.mark(f"eval_{it}")
        if cfg.control:
            if not state.done(f"control_{it}"):
                prev = state.done(f"control_{it - 1}") if it > 1 else state.done("bc")
                say(f"iteration {it}: control: fine-tuning on the expert traces only ...")
                state.mark(f"control_{it}", fine_tune(f"control{it}", cfg.finetune_steps, list(cfg.expert_traces),
                                                      [1.0] * len(cfg.expert_traces), init_from=prev,
                                                      lr=cfg.finetune_lr))
            if not state.done(f"eval_control_{it}"):
                say(f"iteration {it}: evaluating the control {state.done(f'control_{it}')} ...")
                state.add_results(evaluate_method(state.done(f"control_{it}"), it, "", "control"))
                state.mark(f"eval_control_{it}")
        write_outputs(folder, state.data["results"])
    say(f"wrote {os.path.join(folder, 'results.csv')} and solve_rate.png")
    if not cfg.quiet:
        from .report import table

        rows = [[r["iteration"], r["method"], r["eval_set"], r["solve_rate"], r["median_train_mse"],
                 r.get("well_formed_pct") or "-", r["time_per_expression"]] for r in state.data["results"]]
        print(table(rows, ["iter", "method", "eval set", "solve rate", "median MSE", "well-formed %", "s/expr"]))
    return folder
