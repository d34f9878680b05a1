#!/usr/bin/env bash
# Set up this project on a fresh Debian/Ubuntu machine (CPU), into the active Python environment.
#   bash scripts/setup.sh          runtime dependencies
#   bash scripts/setup.sh --dev    runtime + test dependencies (with a one-node SLURM from Debian for
#                                  tests/test_slurm.py, and the Snakemake SLURM executor plugin)
# For CUDA machines see README.md ("Installing with CUDA"): install the CUDA build of torch first,
# then run this script; it leaves an installed torch alone when its version fits the project's range.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev,slurm]"

# Headless OpenGL for pyrender: EGL with Mesa's software driver (llvmpipe) on CPU machines.
apt_packages=(libegl1 libgl1-mesa-dri libegl-mesa0)
# Tests: a real SLURM cluster of one node (tests/test_slurm.py skips, saying why, without them), and
# Chromium to render the Snakemake report headless (tests/test_workflow.py skips that check without it).
[[ "${1:-}" == "--dev" ]] && apt_packages+=(slurm-wlm slurmctld slurmd slurm-client munge chromium)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else sudo="none"; fi
    if [[ "$sudo" == none ]] || ! command -v apt-get >/dev/null; then
        echo "setup: cannot install ${missing[*]} (no apt-get or no root); ask your administrator," \
             "or rely on the GPU driver's EGL on GPU nodes (the SLURM test is skipped without its packages)." >&2
    else
        $sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
            || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }
        echo "setup: installed ${missing[*]}"
    fi
fi

# torch first, pinned, so that resolving the project does not pull a multi-GB CUDA build here.
if ! $PYTHON -c 'import torch, sys; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(not ((2, 1) <= v < (2, 14)))' 2>/dev/null; then
    $PYTHON -m pip install -q torch==2.13.0
fi
$PYTHON -m pip install -q -e ".${extras}"
echo "setup: done ($($PYTHON -c 'import torch; print("torch", torch.__version__)'))"
