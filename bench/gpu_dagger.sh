#!/usr/bin/env bash
# DAgger on the larger model (issue 12's GPU clause) in one lent-GPU call of under 10 minutes.
# The rollouts of `large` and the expert's labels are made on a CPU beforehand and converted to examples with
# their DAgger weight (BENCHMARKS.md, "DAgger on `large`", has those commands); here:
#   1. fine-tune `large` on the expert examples plus the DAgger examples, and, side by side, the control arm: the
#      same fine-tuning on the expert examples alone;
#   2. evaluate both, side by side, on Feynman-100 and on the held-out random families (population 20, 50
#      generations, fitting 10, seeds 0-4), reusing the expert's recorded runs (bench/results: the expert's
#      runs do not depend on the machine), so the device time goes to the models;
#   3. pack the DAgger checkpoint (no optimizer state) as a tar in 15 MB parts, and every log and JSON as one
#      archive (results.tgz), into OUT.
#
#   bash bench/gpu_dagger.sh          # there, with .gpu/ carried (bc_examples.pkl.gz, dagger_large_it1.pkl.gz)
#   QUICK=1 DEVICE=cpu bash bench/gpu_dagger.sh   # a smoke run of this script on a CPU (its figures mean nothing)
set -u
OUT=${OUT:-gpu_out}
RUNS=${RUNS:-.gpu/runs}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-500}
INIT=${INIT:-training/checkpoints/large/checkpoint-2500}
EXPERT=${EXPERT:-.gpu/bc_examples.pkl.gz}
DAGGER=${DAGGER:-.gpu/dagger_large_it1.pkl.gz}
TRAIN_S=${TRAIN_S:-150}
EVAL_S=${EVAL_S:-330}
QUICK=${QUICK:-}
TB=128; VS=512
if [ -n "$QUICK" ]; then STEPS=4; TB=4; VS=16; rnd="--heldout_problems 2 --generations 3 --seeds 0"; fey="--generations 3 --seeds 0 --points 50"
else rnd="--heldout_problems 50 --seeds 0 1 2 3 4"; fey="--seeds 0 1 2 3 4"; fi
R=bench/results
FEYNMAN_EXPERT="$R/neural/compare_dagger2_nguyen_feynman.json $R/neural/compare_dagger2_feynman_seeds12.json
  $R/neural/compare_dagger2_feynman_seed3.json $R/neural/compare_dagger2_feynman_seed4.json"
RANDOM_EXPERT="$R/gpu/compare_arith_full_large_h200.json $R/gpu/compare_physics_large_h200.json"
mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
LOG=$OUT/session.log
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

say "versions"
python3 -c "import sys, numpy, numba, torch, transformers
print(sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__, 'torch', torch.__version__,
      'transformers', transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')
import nsr.kernels" 2>&1 | tee -a "$LOG" || { say "the toolkit does not import here"; exit 1; }

# compile the kernels once (numba caches them) while the GPU trains, so the evaluations start warm
python3 -c "import numpy as np; from nsr.estimators import BasicSR
X = np.random.default_rng(0).uniform(1, 2, (50, 2))
BasicSR(population_size=10, num_generations=3, constant_fitting=2, operator_set='physics').fit(X, X[:, 0] * X[:, 1])" \
    > "$OUT/warm.log" 2>&1 &

# meanwhile the CPU is free: constant fitting in one thread against all of them (bench_gpu.py's fitting row,
# batch 512, the small `default` model), alternated, in one process
python3 -c "import json, torch
from bench.bench_gpu import speed_part
rows = []
for threads in (1, torch.get_num_threads()) * (1 if '$QUICK' else 2):
    torch.set_num_threads(threads)
    speed_part(torch, '$DEVICE', 'training/checkpoints/default', [(8 if '$QUICK' else 512, 10)], 3 if '$QUICK' else 10, rows)
    rows[-1]['threads'] = threads
json.dump(rows, open('$OUT/fitting_threads.json', 'w'), indent=1)" > "$OUT/fitting_threads.log" 2>&1 &

say "1. fine-tuning, $STEPS steps: DAgger (expert + DAgger examples) and control (expert examples), side by side"
train() {
    local name=$1; shift
    timeout -s INT "$TRAIN_S" python3 training/train.py --data "$@" --init_from "$INIT" --name "$name" \
        --output_dir "$RUNS" --overwrite --steps "$STEPS" --batch_size $TB --eval_states $VS --lr 3e-4 --warmup_steps 20 \
        --eval_every $(( STEPS / 4 > 0 ? STEPS / 4 : 1 )) --save_every "$STEPS" --precision bf16 --device "$DEVICE" \
        --quiet > "$OUT/train_$name.log" 2>&1
    echo "$name exit $?" | tee -a "$LOG"
}
train dagger_large "$EXPERT" "$DAGGER" &
train control_large "$EXPERT" &
wait
for name in dagger_large control_large; do
    python3 -c "import json; m = json.load(open('$RUNS/$name/checkpoint-$STEPS/metrics.json'))
print('$name', json.dumps(m['history']))" 2>&1 | tee -a "$LOG"
done

say "2. evaluation, side by side (expert runs: recorded)"
cmp() {  # NAME SETS TAG THREADS BATCH ARGS...
    local name=$1 sets=$2 tag=$3 threads=$4 batch=$5; shift 5
    OMP_NUM_THREADS=$threads timeout -s INT "$EVAL_S" python3 bench/bench_neural.py compare \
        --checkpoints "$name=$RUNS/$name/checkpoint-$STEPS" --sets "$sets" --constant_fitting 10 \
        --batch_size "$batch" --device "$DEVICE" "$@" --json "$OUT/compare_${sets}${tag}_$name.json" \
        > "$OUT/compare_${sets}${tag}_$name.log" 2>&1
    echo "compare $sets$tag $name exit $?" | tee -a "$LOG"
}
# Feynman's 1,000 points per problem make fitting its bulk: most threads go there, and the DAgger model's runs
# (the figure that matters most) in two processes
if [ -n "$QUICK" ]; then cmp dagger_large feynman "" 4 500 $fey --expert_runs $FEYNMAN_EXPERT &
else
    cmp dagger_large feynman _s012 4 300 --seeds 0 1 2 --expert_runs $FEYNMAN_EXPERT &
    cmp dagger_large feynman _s34 3 200 --seeds 3 4 --expert_runs $FEYNMAN_EXPERT &
fi
cmp control_large feynman "" 3 500 $fey --expert_runs $FEYNMAN_EXPERT &
for name in dagger_large control_large; do
    for s in arith full physics; do cmp $name $s "" 1 250 $rnd --expert_runs $RANDOM_EXPERT & done
done
wait
grep -h "^| " "$OUT"/compare_*.log | grep -v "| expert |" | sort -u | tee -a "$LOG"

say "3. packing"
last=$RUNS/dagger_large/checkpoint-$STEPS
if [ -d "$last" ]; then
    tar -C "$(dirname "$last")" --exclude optimizer.safetensors -cf - "$(basename "$last")" \
        | split -b 15M - "$OUT/dagger_large_checkpoint.tar."
fi
cp "$RUNS/control_large/checkpoint-$STEPS/metrics.json" "$OUT/control_large_metrics.json" 2>/dev/null
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>&1 | tee -a "$LOG"
# the device tool brings back at most 8 files (its first run of this script lost the rest): one archive of the
# logs and JSON, the session log and the checkpoint's parts
tar -C "$OUT" --exclude results.tgz --exclude session.log --exclude 'dagger_large_checkpoint.tar.*' \
    -czf "$OUT/results.tgz" . \
    && find "$OUT" -maxdepth 1 -type f ! -name results.tgz ! -name session.log \
        ! -name 'dagger_large_checkpoint.tar.*' -delete
say "done: $(ls "$OUT" | tr '\n' ' ')"
