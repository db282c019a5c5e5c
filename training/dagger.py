#!/usr/bin/env python
"""The DAgger loop: roll out, relabel with the expert, aggregate, fine-tune, evaluate (a CLI over nsr.dagger).

    python training/dagger.py --name dagger_default --init_checkpoint training/checkpoints/default \\
        --expert_traces T1.pkl.gz T2.pkl.gz --train_expressions TRAIN.pkl.gz \\
        --eval_expressions datasets/expressions/heldout_arith_100_c05.pkl.gz datasets/expressions/nguyen_12.pkl.gz \\
        --iterations 3 --beta_schedule 0.5 0.25 0 --label best_of_k --k 4 --finetune_steps 500

Writes ``{output_dir}/{name}/results.csv`` and ``solve_rate.png``; rerun with
--resume after an interruption to continue where it stopped. See nsr/dagger.py.
"""
import sys

from nsr.cli import ArgumentParser, run_main, run_metadata
from nsr.config import ROLLOUT_DEFAULTS, EvolutionConfig, add_arguments, from_args
from nsr.dagger import DAggerConfig, run_dagger


def main(argv):
    p = ArgumentParser(description="Iterative DAgger for the neural proposer.")
    add_arguments(p, DAggerConfig)
    add_arguments(p.add_argument_group("rollouts and evaluation runs (operator set and constants: each file's own)"),
                  EvolutionConfig, defaults=ROLLOUT_DEFAULTS, exclude=("operator_set", "constants"))
    args = p.parse_args(argv)
    run_dagger(from_args(DAggerConfig, args), from_args(EvolutionConfig, args), run_metadata(args))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
