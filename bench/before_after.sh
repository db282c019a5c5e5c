#!/usr/bin/env bash
# Issue 10: the release before the redesign (BEFORE, a checkout of 57531d9) and this checkout side by side,
# alternating, 3 rounds: BasicSR throughput, neural SR seconds per expression (the old release's shipped
# `default` checkpoint in both), DAgger relabeling speed on one neural trace that both read.
#   BEFORE=../before bash bench/before_after.sh
set -euo pipefail
# Both sides wait passively in OpenMP: the old release let torch's threads spin, which on a shared machine
# measures the neighbours, not the code (bench/bench_concurrency.py measures that difference on its own).
export OMP_WAIT_POLICY=PASSIVE
AFTER=$(cd "$(dirname "$0")/.." && pwd)
BEFORE=$(cd "${BEFORE:-$AFTER/../before}" && pwd)
OUT=$AFTER/bench/results/redesign; mkdir -p "$OUT"
CK=$BEFORE/training/checkpoints/default
T=$(mktemp -d)
# one neural trace, written by the old release (format 1, which both read)
(cd "$BEFORE" && python generate_traces.py --expressions_file datasets/expressions/heldout_arith_100_c05.pkl.gz \
   --max_expressions 50 --checkpoint "$CK" --batch_size 32 --population_size 20 --num_generations 50 --seed 0 \
   --output_dir "$T" --quiet)
IN=$(ls "$T"/*.pkl.gz)
for r in 1 2 3; do
  for tree in before after; do
    if [ $tree = before ]; then cd "$BEFORE"; else cd "$AFTER"; fi
    echo "== round $r $tree basicsr"; python "$AFTER/bench/before_after_basicsr.py" | tee -a "$OUT/basicsr_$tree.jsonl"
    echo "== round $r $tree neural"
    python bench/bench_neural.py speed --checkpoint "$CK" --batch_sizes 1 32 --repeats 1 --json "$OUT/neural_${tree}_$r.json" 2>&1 | tail -4
    echo "== round $r $tree relabel"
    python bench/bench_relabel.py --input "$IN" --repeats 1 --json "$OUT/relabel_${tree}_$r.json" --quiet 2>&1 | tail -3
  done
done
rm -rf "$T"
