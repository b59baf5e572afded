#!/usr/bin/env bash
# Split the offline CIFAR-10 files into three git-ignored folders that each travel with one GPU call.
# ../shared/tools/stage-cifar10 makes two folders, but the first (59 MB) no longer fits the 64 MiB a call
# may carry once the working tree (~13 MB) is counted. Run from the repository root:
#   bash scripts/stage_cifar10_parts.sh [DATA_DIR]     (default ../shared/data)
# Then three back-to-back calls (the machine is given back 30 s after a call ends), each carrying one part:
#   carry [".data/p1"]: mkdir -p ~/c10 && cp .data/p1/* ~/c10/
#   carry [".data/p2"]: cp .data/p2/* ~/c10/
#   carry [".data/p3"]: cp .data/p3/* ~/c10/ && <the runs, reading ~/c10>
set -euo pipefail
src=${1:-../shared/data}
[ -f "$src/cifar10-manifest.json" ] || { echo "no CIFAR-10 data at $src (cifar10-manifest.json missing)" >&2; exit 1; }
grep -qx '/.data/' .git/info/exclude 2>/dev/null || echo '/.data/' >> .git/info/exclude
mkdir -p .data/p1 .data/p2 .data/p3
cp "$src"/cifar10-train-{0,1}.u8.xz .data/p1/
cp "$src"/cifar10-train-{2,3}.u8.xz .data/p2/
cp "$src"/cifar10-train-4.u8.xz "$src"/cifar10-train-labels.npz "$src"/cifar10-manifest.json \
   "$src"/cifar10-test1k-lossless.npz .data/p3/
du -sh .data/p1 .data/p2 .data/p3
