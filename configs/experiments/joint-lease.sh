#!/usr/bin/env bash
# Generate the data and train the joint models on one GPU lease, in parallel: poisson64-joint,
# its x0-preconditioned twin (the preconditioning measured), and darcy64-joint. Each run gets
# the seconds left until BUDGET (train.py --seconds) and exports its EMA weights to OUT.
# Usage: OUT=DIR BUDGET=SECONDS PY=python3 bash configs/experiments/joint-lease.sh
# POISSON and DARCY name the configs trained on each dataset (the defaults below); the second
# lease trained POISSON="poisson64-joint-obs poisson64-joint-obs-x0" DARCY=darcy64-joint-obs
# with the first lease's exports in runs/lease/ (their train.init).
set -u
OUT=${OUT:-runs/lease}
BUDGET=${BUDGET:-400}
PY=${PY:-python3}
POISSON=${POISSON:-poisson64-joint poisson64-joint-x0}
DARCY=${DARCY:-darcy64-joint}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - start) )); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/device.txt"
$PY generate_data.py --n 64 --count 20000 --source blobs,grf --boundary zero,smooth --seed 0 --valid-count 512 \
    --test-count 512 --out datasets/poisson64 --workers 5 --quiet --overwrite > "$OUT/gen-poisson.log" 2>&1 &
gp=$!
$PY generate_data.py --problem darcy --n 64 --count 10000 --valid-count 500 --test-count 500 \
    --out datasets/darcy64 --workers 11 --quiet --overwrite > "$OUT/gen-darcy.log" 2>&1 &
gd=$!
train() {  # config name: configs/NAME.yaml, or configs/experiments/NAME.yaml
    cfg="configs/$1.yaml"; [ -f "$cfg" ] || cfg="configs/experiments/$1.yaml"
    $PY train.py --config "$cfg" --out "runs/$1" --overwrite --seconds "$(left)" --no-progress \
        --export "$OUT/$1.safetensors" > "$OUT/$1.log" 2>&1
    cp "runs/$1/metrics.jsonl" "$OUT/$1.metrics.jsonl" 2>/dev/null
}
wait $gp; echo "poisson data at $(( $(date +%s) - start )) s"
for c in $POISSON; do train "$c" & done
wait $gd; echo "darcy data at $(( $(date +%s) - start )) s"
for c in $DARCY; do train "$c" & done
wait
echo "done at $(( $(date +%s) - start )) s"
tail -n 3 "$OUT"/*.log
