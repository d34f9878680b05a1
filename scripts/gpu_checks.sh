#!/usr/bin/env bash
# The project's CUDA checks in one run, for a lent GPU machine (the `device` tool runs this from the
# repository root with $OUT set): the CUDA cases of the tests, then the GPU benchmarks, each benchmark's
# JSON line saved under $OUT. Assumes torch with CUDA is importable (the machine's own or a carried wheel).
set -uo pipefail
OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"
python3 -m pytest -q -p no:cacheprovider -k "cuda or CUDA" tests/test_models.py tests/test_inference.py \
    tests/test_soft_render.py tests/test_dsr_losses.py 2>&1 | tail -15 | tee "$OUT/tests.txt"
run() {  # name, then the benchmark command: its last line (the JSON figures) goes to $OUT/name.json
    local name=$1; shift
    "$@" > "$OUT/$name.log" 2>&1 && tail -1 "$OUT/$name.log" > "$OUT/$name.json"
    echo "$name: exit $?"; tail -3 "$OUT/$name.log"
}
run regressor python3 bench/regressor.py --device cuda --batches 1 64
run dsr_loss python3 bench/dsr_loss.py --device cuda --baseline-samples 2
run train python3 bench/train.py --device cuda --steps 5
