#!/usr/bin/env python
"""Convert trace files (expert and/or DAgger) into a supervised examples file.

    python training/prepare_data.py --traces datasets/traces/gen50_a.pkl.gz datasets/traces/gen50_a_dagger.pkl.gz \\
        --output datasets/examples/a.pkl.gz --mode one_step --targets all --val_fraction 0.05

See nsr/examples.py for what a state and a target are. train.py accepts the
trace files directly too (--traces); this script converts once, for inspecting
or reusing the result (train.py --data). ``--trace_weights`` are stored in the
examples (per state), so a prepared file samples as ``train.py --traces`` with
the same weights would.
"""
import sys

from tqdm import tqdm

from nsr.cli import ArgumentParser, run_main, run_metadata
from nsr.config import add_arguments, from_args
from nsr.drivers import check_output
from nsr.examples import convert_files, save_examples
from nsr.prompt import PromptConfig
from nsr.tokenizer import VOCAB_VERSION, Vocab
from nsr.trainer import TrainConfig


def parse_args(argv):
    """(namespace, TrainConfig) of the flags."""
    p = ArgumentParser(description="Convert traces into training examples.")
    add_arguments(p, TrainConfig, only=("traces", "trace_weights", "mode", "targets", "val_fraction",
                                        "max_prompt_members", "quiet"))
    p.add_argument("--output", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = p.parse_args(argv)
    cfg = from_args(TrainConfig, args)
    if not cfg.traces:
        p.error("give --traces")
    return args, cfg


def main(argv):
    args, cfg = parse_args(argv)
    check_output(args.output, args.overwrite, cfg.traces)
    members = cfg.max_prompt_members or PromptConfig.max_members
    with tqdm(desc="records", disable=cfg.quiet, unit="rec") as bar:
        train, val, stats = convert_files(cfg.traces, Vocab(), cfg.mode, cfg.targets, members, cfg.val_fraction,
                                          progress=bar.update, weights=cfg.trace_weights)
    meta = run_metadata(args)
    meta.update(mode=cfg.mode, targets=cfg.targets, trace_weights=cfg.trace_weights, vocab_version=VOCAB_VERSION,
                max_prompt_members=members, stats=stats, train_states=len(train), train_targets=train.n_targets,
                val_states=len(val), val_targets=val.n_targets)
    save_examples(args.output, train, val, meta)
    if not cfg.quiet:
        print(f"{len(train)} train states ({train.n_targets} targets), {len(val)} validation states "
              f"({val.n_targets} targets) from {stats['records']} trajectories; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
