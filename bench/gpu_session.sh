#!/usr/bin/env bash
# One lent-GPU session in one call (issues 12 and 13), each part time-capped so the whole fits a 10-minute command:
#   1. bench/bench_gpu.py as is (the GPU path: bf16 training, BatchedNeuralSR speed, end to end, CPU side);
#   2. (TRAIN=1 only) a larger model ("base": hidden 256, 6 layers) trained in bf16 on the examples of the shipped
#      `default` checkpoint's training traces (training/prepare_data.py output, carried in EXAMPLES): this is how
#      training/checkpoints/large was made;
#   3. the held-out comparison on the GPU: the expert and the larger model (the one just trained, else the shipped
#      `large`) on every random family at 5 seeds, then on Feynman-100 (`large` is too slow to compare on a CPU).
# Everything lands in OUT (the device tool's folder, else ./gpu_out): session.log, bench_gpu.json, compare*.json and,
# with TRAIN=1, the larger model's last checkpoint as a tar split into 15 MB parts (no optimizer state).
#
#   python training/prepare_data.py --traces datasets/traces/gen50_train_*.pkl.gz --targets improved \
#       --output .gpu/bc_examples.pkl.gz      # here, for TRAIN=1 (the traces: training/checkpoints/default/README.md)
#   bash bench/gpu_session.sh                 # there (TRAIN=1: with .gpu carried)
set -u
OUT=${OUT:-gpu_out}
EXAMPLES=${EXAMPLES:-.gpu/bc_examples.pkl.gz}
STEPS=${STEPS:-2500}
RUNS=${RUNS:-.gpu/runs}
DEVICE=${DEVICE:-cuda}
TRAIN=${TRAIN:-}
QUICK=${QUICK:-}  # QUICK=1 DEVICE=cpu STEPS=2: a smoke run of this script on a CPU (its figures mean nothing)
if [ -n "$QUICK" ]; then bench_args=--quick; cmp_args="--sets arith --seeds 0 --heldout_problems 2 --generations 3"
    feynman_args="--sets feynman --seeds 0 --heldout_problems 2 --generations 3"
else bench_args=; cmp_args="--sets arith full physics --seeds 0 1 2 3 4 --heldout_problems 50"
    feynman_args="--sets feynman --seeds 0"; fi
mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
LOG=$OUT/session.log
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

say "versions"
python3 -c "import sys, numpy, numba, torch, transformers, sympy
print(sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__, 'torch', torch.__version__,
      'transformers', transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')
import nsr.kernels" 2>&1 | tee -a "$LOG" || { say "the toolkit does not import here"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | tee -a "$LOG"

say "1. bench_gpu.py"
timeout -s INT 190 python3 bench/bench_gpu.py --device "$DEVICE" $bench_args --json "$OUT/bench_gpu.json" 2>&1 | tee -a "$LOG"

last=
if [ -n "$TRAIN" ]; then
say "2. larger model, bf16, $STEPS steps"
timeout -s INT 215 python3 training/train.py --data "$EXAMPLES" --model_size base --name large --output_dir "$RUNS" \
    --overwrite --steps "$STEPS" --batch_size 128 --eval_every 250 --save_every 250 --precision bf16 --device "$DEVICE" --quiet \
    2>&1 | tee -a "$LOG"
last=$(ls -d "$RUNS"/large/checkpoint-* 2>/dev/null | sort -t- -k2 -n | tail -1)
if [ -n "$last" ]; then
    say "last checkpoint: $last"
    tar -C "$(dirname "$last")" --exclude optimizer.safetensors -cf - "$(basename "$last")" \
        | split -b 15M - "$OUT/large_checkpoint.tar."
    python3 -c "import json; m = json.load(open('$last/metrics.json')); print(json.dumps(m['history']))" \
        2>&1 | tee -a "$LOG"
fi
fi

say "3. held-out comparison on the GPU"
large=${last:-training/checkpoints/large}
timeout -s INT ${CMP_S:-210} python3 bench/bench_neural.py compare --checkpoints large=$large $cmp_args \
    --constant_fitting 10 --expert_workers 14 --batch_size 250 --device "$DEVICE" \
    --json "$OUT/compare.json" 2>&1 | tee -a "$LOG"
timeout -s INT ${FEYNMAN_S:-150} python3 bench/bench_neural.py compare --checkpoints large=$large $feynman_args \
    --constant_fitting 10 --expert_workers 14 --batch_size 100 --device "$DEVICE" \
    --json "$OUT/compare_feynman.json" 2>&1 | tee -a "$LOG"
say "done"
