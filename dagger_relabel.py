#!/usr/bin/env python
"""Label every state a neural rollout visited with what the BasicSR expert does from it.

    python dagger_relabel.py --input datasets/traces/gen50_x.pkl.gz            # -> gen50_x_dagger.pkl.gz
    python dagger_relabel.py --input IN --output OUT --label best_of_k --k 4 --seed 0

Input must be a neural trace (generate_traces.py --checkpoint ...) unless
--force. The input file is never modified. See nsr/dagger.py for the labels.
"""
import os
import sys
import time

from tqdm import tqdm

from nsr import safe_io
from nsr.cli import ArgumentParser, nonneg_int, positive_int, run_main, run_metadata
from nsr.dagger import LABELS, Relabeler
from nsr.safe_io import InputError
from nsr.traces import load_traces


def default_output(path):
    for ext in (".pkl.gz", ".gz", ".pkl"):
        if path.endswith(ext):
            return path[: -len(ext)] + "_dagger" + ext
    return path + "_dagger.pkl.gz"


def main(argv):
    p = ArgumentParser(description="Relabel neural SR traces with the expert's actions (DAgger).")
    p.add_argument("--input", required=True, help="neural SR traces file")
    p.add_argument("--output", default=None, help="default: the input name with _dagger")
    p.add_argument("--label", choices=LABELS, default="expert")
    p.add_argument("--k", type=positive_int, default=4, help="candidates per child slot for best_of_k")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--force", action="store_true", help="accept traces that are not from neural SR")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    output = args.output or default_output(args.input)
    if os.path.abspath(output) == os.path.abspath(args.input):
        raise InputError(f"{output}: the output path is the input file")
    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir):
        raise InputError(f"{out_dir}: output folder does not exist")
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"{out_dir}: output folder is not writable")
    data = load_traces(args.input)
    meta = data["metadata"]
    source = meta.get("source") or data["records"][0].get("source")
    if meta.get("dagger"):
        raise InputError(f"{args.input}: already a DAgger trace")
    if source != "neural_sr" and not args.force:
        raise InputError(f"{args.input}: not a neural SR trace (source {source!r}); relabeling expert traces "
                         f"adds nothing (use --force to do it anyway)")
    relabeler = Relabeler(args.label, args.k)
    t0 = time.perf_counter()
    records = []
    for i, r in enumerate(tqdm(data["records"], disable=args.quiet, desc="relabel", unit="traj")):
        records.append(relabeler.relabel_record(r, args.seed, i, where=f"{args.input}: record {i}: "))
    elapsed = time.perf_counter() - t0
    new_meta = dict(meta)
    new_meta.update(dagger=True, original_source=source, relabel=run_metadata(args),
                    relabel_params={"label": relabeler.label, "k": relabeler.k, "seed": args.seed},
                    relabeled_from=os.path.abspath(args.input), states=relabeler.states)
    safe_io.save(output, "traces", new_meta, records)
    if not args.quiet:
        print(f"relabeled {relabeler.states} states of {len(records)} trajectories in {elapsed:.2f}s "
              f"({relabeler.states / max(elapsed, 1e-9):.0f} states/s, label {relabeler.label}"
              f"{f', k={relabeler.k}' if relabeler.k > 1 else ''})")
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
