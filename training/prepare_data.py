#!/usr/bin/env python
"""Convert trace files (expert and/or DAgger) into a supervised examples file.

    python training/prepare_data.py --traces datasets/traces/gen50_a.pkl.gz datasets/traces/gen50_a_dagger.pkl.gz \\
        --output datasets/examples/a.pkl.gz --mode one_step --targets all --val_fraction 0.05

See training/data.py for what a state and a target are. train.py accepts the
trace files directly too (--traces); this script is for converting once and
inspecting or reusing the result (--data).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tqdm import tqdm  # noqa: E402

from nsr import safe_io  # noqa: E402
from nsr.cli import ArgumentParser, positive_int, probability, run_main, run_metadata  # noqa: E402
from nsr.tokenizer import VOCAB_VERSION, Vocab  # noqa: E402
from training.data import MODES, TARGET_MODES, convert_files, save_examples  # noqa: E402


def main(argv):
    p = ArgumentParser(description="Convert traces into training examples.")
    p.add_argument("--traces", nargs="+", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--mode", choices=MODES, default="one_step")
    p.add_argument("--targets", choices=TARGET_MODES, default="all")
    p.add_argument("--val_fraction", type=probability, default=0.05)
    p.add_argument("--max_prompt_members", type=positive_int, default=32)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if any(os.path.abspath(t) == os.path.abspath(args.output) for t in args.traces):
        p.error("--output must not be one of the inputs")
    safe_io.check_output_file(args.output)
    with tqdm(desc="records", disable=args.quiet, unit="rec") as bar:
        train, val, stats = convert_files(args.traces, Vocab(), args.mode, args.targets, args.max_prompt_members,
                                          args.val_fraction, progress=bar.update)
    meta = run_metadata(args)
    meta.update(mode=args.mode, targets=args.targets, vocab_version=VOCAB_VERSION, stats=stats,
                train_states=len(train), train_targets=train.n_targets, val_states=len(val),
                val_targets=val.n_targets)
    save_examples(args.output, train, val, meta)
    if not args.quiet:
        print(f"{len(train)} train states ({train.n_targets} targets), {len(val)} validation states "
              f"({val.n_targets} targets) from {stats['records']} trajectories; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
