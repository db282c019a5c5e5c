#!/usr/bin/env python
"""Train the tiny causal LM on BasicSR (and DAgger) traces (a CLI over nsr.trainer).

    python training/train.py --traces datasets/traces/gen50_train_arith_2k_c05.pkl.gz --name default --steps 3000
    python training/train.py --data examples.pkl.gz --name mymodel          # from prepare_data.py output
    torchrun --nproc_per_node 4 training/train.py --traces ... --device cuda  # several GPUs (DDP)

Checkpoints: ``{output_dir}/{name}/checkpoint-{step}/`` with config.json,
model.safetensors, the tokenizer, metrics.json (train/val loss history and the
command), and training_state.json + optimizer.safetensors for ``--resume``.
"""
import sys

from nsr.cli import ArgumentParser, run_main
from nsr.config import add_arguments, from_args
from nsr.trainer import TrainConfig, train


def main(argv):
    p = ArgumentParser(description="Train the neural proposer on SR traces.")
    add_arguments(p, TrainConfig)
    train(from_args(TrainConfig, p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
