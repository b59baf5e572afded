# Sourced by the scripts/gpu_*.sh batches (on the GPU machine, from the repository root).
# The package is not installed there: run it from src/. Data: ~/c10, staged by
# scripts/stage_cifar10_parts.sh (carry .data/p1 ... .data/p5 in five back-to-back calls;
# folders of ../shared/tools/stage-cifar10, .data/c10-a and .data/c10-b, are copied as well when carried).
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/idinit-out}
C10=${C10:-$HOME/c10}
mkdir -p "$OUT" "$C10"
for part in .data/c10-a .data/c10-b .data/p1 .data/p2 .data/p3 .data/p4 .data/p5; do
    if [ -d "$part" ]; then cp "$part"/* "$C10"/ && echo "staged $part into $C10"; fi
done
ls "$C10"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), flush=True)" || exit 1

need_chunks() {  # need_chunks 0 1 2 3 4: fail early, naming what is missing
    local missing=()
    for c in "$@"; do [ -f "$C10/cifar10-train-$c.u8.xz" ] || missing+=("cifar10-train-$c.u8.xz"); done
    [ -f "$C10/cifar10-train-labels.npz" ] || missing+=("cifar10-train-labels.npz")
    [ -f "$C10/cifar10-test1k-lossless.npz" ] || missing+=("cifar10-test1k-lossless.npz")
    if [ ${#missing[@]} -gt 0 ]; then
        echo "missing in $C10: ${missing[*]} (stage with scripts/stage_cifar10_parts.sh and five back-to-back calls carrying .data/p1 ... .data/p5)" >&2
        exit 3
    fi
}
