#!/usr/bin/env bash
# Score demo-parser weights on two held-out splits that are never part of the DAG, so that changes to
# the demo parser are chosen on data the check (results/checks/parsing.json) does not see.
#
#   bash scripts/parser_heldout.sh WEIGHTS.pth OUT_DIR [INPUT_RESOLUTION [SCALE ...]]
#
# The splits are drawn like the demo world's test and occluded splits (100 images each, the default
# config's options) but named valclean / valocc, which seeds different images; they are made once per
# OUT_DIR from results/body/demo_body.npz (run `snakemake --cores 2 body` first). The weights label
# them with the parsing rule's own command and the DSR preset; resolution and scales default to the
# config schema's parsing.demo.inference_resolution and parsing.demo.scales (the scale `preset`: the
# DSR preset's own). `pipeline.parsing check` scores them; the last line printed is its JSON summary.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n 5p "$0" >&2
    exit 2
fi
weights=$1 out=$2
shift 2
read -r default_resolution default_scales < <(python -c "from pipeline.config import schema_defaults
d = schema_defaults('parsing', 'demo')
print(d['inference_resolution'] or d['input_resolution'], ' '.join(map(str, d['scales'] or ['preset'])))")
resolution=${1:-$default_resolution}
[ $# -gt 0 ] && shift
scales=${*:-$default_scales}
scale_options=()
[ "$scales" = preset ] || read -r -a scale_options <<< "--scales $scales"
tag="r$resolution-s${scales// /_}"
body=results/body/demo_body.npz
[ -f "$weights" ] || { echo "no weights at $weights" >&2; exit 1; }
[ -f "$body" ] || { echo "no demo body at $body: run 'snakemake --cores 2 body' first" >&2; exit 1; }
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} GOMP_SPINCOUNT=20000

split_options() {  # the default config's world.splits.test / occluded
    case $1 in
        valclean) echo "--second-person-prob 0.3 --occluders 0 0" ;;
        valocc) echo "--second-person-prob 0.2 --occluders 1 2" ;;
    esac
}

pairs=()
for split in valclean valocc; do
    if [ ! -f "$out/${split}_gt.npz" ]; then
        # shellcheck disable=SC2046
        python -m pipeline.world images "$body" "$out/shards/$split-0000" --split "$split" --indices 0 100 --seed 0 \
            $(split_options $split) --no-smpl-fraction 0.0 --crop-res 224 > "$out/$split-world.log" 2>&1
        python -m pipeline.world merge "$out/$split.npz" "$out/${split}_gt.npz" "$out/shards/$split-0000" >> "$out/$split-world.log" 2>&1
    fi
    labels="$out/$tag/$split"
    mkdir -p "$labels"
    python -m pipeline.parsing shard "$weights" "$out/$split.npz" "$labels/shard-0000.npz" --dataset "demo_$split" \
        --images "$out" --indices 0 100 --label-resolution 224 --device auto --variant transfer --preset dsr \
        --mode crop --context 1.0 --batch-size 1 --input-resolution "$resolution" "${scale_options[@]}" --sides keypoints > "$labels.log" 2>&1
    python -m pipeline.parsing index "$labels/index.json" "$labels/shard-0000.npz" >> "$labels.log" 2>&1
    pairs+=("$labels/index.json:$out/${split}_gt.npz")
done
python -m pipeline.parsing check "$out/$tag/check.json" "${pairs[@]}" --goal-miou 0.5 > "$out/$tag/check.log" 2>&1
python - "$out/$tag/check.json" "$resolution" "$scales" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps({"resolution": int(sys.argv[2]), "scales": sys.argv[3], "miou": round(d["miou"], 4), **{k: round(v["miou"], 4) for k, v in d["per_dataset"].items()},
                  "per_label_iou": {k: round(v, 3) for k, v in d["per_label_iou"].items()}}))
EOF
