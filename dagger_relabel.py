#!/usr/bin/env python
"""Label every state a neural rollout visited with what the BasicSR expert does from it.

    python dagger_relabel.py --input datasets/traces/gen50_x_neural.pkl.gz     # -> gen50_x_neural_dagger.pkl.gz
    python dagger_relabel.py --input IN --output OUT --label best_of_k --k 4 --seed 0

Input must be a neural trace (generate_traces.py --checkpoint ...) unless
--force. The input file is never modified, an existing output never replaced
without --overwrite. See nsr/relabel.py for the labels.
"""
import sys

from nsr.cli import ArgumentParser, positive_int, run_main, run_metadata
from nsr.relabel import LABELS, Relabeler, relabel_file


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
    p.add_argument("--seed", type=int, default=42, help="state g of record i uses SeedSequence([seed, i, g])")
    p.add_argument("--force", action="store_true", help="accept traces that are not from neural SR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    output = args.output or default_output(args.input)
    relabeler = Relabeler(args.label, args.k, args.seed)
    meta = relabel_file(args.input, output, relabeler, run_metadata(args), force=args.force,
                        overwrite=args.overwrite, quiet=args.quiet)
    if not args.quiet:
        t = meta["relabel_seconds"]
        print(f"relabeled {relabeler.states} states of {meta['num_records']} trajectories"
              f" in {t:.2f}s ({relabeler.states / max(t, 1e-9):.0f} states/s, label {relabeler.label}"
              f"{f', k={relabeler.k}' if relabeler.k > 1 else ''})")
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
