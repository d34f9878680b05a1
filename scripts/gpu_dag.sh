#!/usr/bin/env bash
# The default DAG end to end on a lent GPU machine, with the demo trainings FACTOR times longer (steps
# and validation interval): does the demo world's check pass with GPU-scale training, and how long does
# the whole DAG take? Run from the repository root (the `device` tool does), with $OUT set:
#
#     bash scripts/gpu_dag.sh [FACTOR (default 25)] [CONFIG_JSON (merged into config.yaml, default {})]
#
# Writes to $OUT: dag_time.txt (exit status and seconds), dag.log (Snakemake's), the checks
# (results/checks/*.json), the training metrics and summaries, and the curves figure. The working
# directory is $WORK (default /tmp/gpu_dag); a second call resumes there. A CPU smoke test of this
# script: `bash scripts/gpu_dag.sh 0.02 '{"world": {...a tiny world...}}'`.
set -uo pipefail
OUT="${OUT:-gpu_out}"
WORK="${WORK:-/tmp/gpu_dag}"
FACTOR="${1:-25}"
EXTRA="${2:-{\}}"
mkdir -p "$OUT" "$WORK"
python3 - "$FACTOR" "$EXTRA" "$WORK/config.yaml" <<'EOF' || exit 2
import json
import sys

import yaml

# the presets' merge: dictionaries key by key, a `datasets` mapping replaced whole
from trainers.runs import _merge as merge
from trainers.runs import load_presets

factor, extra, out = float(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
config = yaml.safe_load(open("config.yaml"))
runs = config["train"].setdefault("runs", {})
for run, spec in load_presets()[config["train"]["preset"]].items():
    steps = max(2, int(round(spec["steps"] * factor)))
    every = max(1, min(steps, int(round(spec["val_every"] * factor))))
    runs.setdefault(run, {}).update(steps=steps, val_every=every, checkpoint_every=every)
config = merge(config, extra)
with open(out, "w") as f:
    yaml.safe_dump(config, f)
print(json.dumps(config["train"]["runs"]))
EOF
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')" \
    | tee "$OUT/device.txt"
start=$(date +%s)
python3 -m snakemake --snakefile workflow/Snakefile --directory "$WORK" --cores "$(nproc)" all > "$OUT/dag.log" 2>&1
rc=$?
echo "snakemake all: exit $rc in $(( $(date +%s) - start )) s" | tee "$OUT/dag_time.txt"
tail -5 "$OUT/dag.log"
mkdir -p "$OUT/checks" "$OUT/train"
cp "$WORK"/results/checks/*.json "$OUT/checks/" 2>/dev/null
cp "$WORK"/results/figures/train_curves.png "$OUT/" 2>/dev/null
for run in "$WORK"/results/train/*/; do
    name=$(basename "$run")
    mkdir -p "$OUT/train/$name"
    cp "$run"/metrics.csv "$run"/summary.json "$OUT/train/$name/" 2>/dev/null
done
cat "$OUT/checks/train.json" 2>/dev/null
exit $rc
