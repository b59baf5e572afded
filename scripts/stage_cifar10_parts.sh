#!/usr/bin/env bash
# Split the offline CIFAR-10 files into five git-ignored folders that each travel with one GPU call.
# A call carries at most 64 MiB, the working tree included (25 MB on 2026-11-30, and growing with
# results/): two 20 MB training chunks a call no longer fit, so each part holds one chunk, and the last
# part the small files too. The script prints what each call will carry and stops if one would not fit.
# Run from the repository root:
#   bash scripts/stage_cifar10_parts.sh [DATA_DIR]     (default ../shared/data)
# Then five back-to-back calls (the machine is given back 30 s after a call ends), each carrying one part:
#   carry [".data/p1"]: mkdir -p ~/c10 && cp .data/p1/* ~/c10/
#   carry [".data/p2"] ... [".data/p4"]: cp .data/pN/* ~/c10/
#   carry [".data/p5"]: cp .data/p5/* ~/c10/ && <the runs, reading ~/c10>
set -euo pipefail
src=${1:-../shared/data}
[ -f "$src/cifar10-manifest.json" ] || { echo "no CIFAR-10 data at $src (cifar10-manifest.json missing)" >&2; exit 1; }
grep -qx '/.data/' .git/info/exclude 2>/dev/null || echo '/.data/' >> .git/info/exclude
rm -rf .data/p1 .data/p2 .data/p3 .data/p4 .data/p5
for chunk in 0 1 2 3 4; do
    mkdir -p ".data/p$((chunk + 1))"
    cp "$src/cifar10-train-$chunk.u8.xz" ".data/p$((chunk + 1))/"
done
cp "$src"/cifar10-train-labels.npz "$src"/cifar10-manifest.json "$src"/cifar10-test1k-lossless.npz .data/p5/
# What the device tool counts: tracked files and untracked ones git does not ignore, plus the carried part.
# Counted in disk blocks (du -k), not bytes: on 2026-11-30 a call of 63 MiB by apparent size (69 in blocks)
# was refused as larger than 64 MiB.
tree=$(( $( { git ls-files -z; git ls-files -z -o --exclude-standard; } | du -ck --files0-from=- | tail -1 | cut -f1) * 1024 ))
limit=$(( 64 * 1048576 ))
for part in .data/p1 .data/p2 .data/p3 .data/p4 .data/p5; do
    total=$(( tree + $(du -sk "$part" | cut -f1) * 1024 ))
    echo "$part: $(( total / 1048576 )) MiB with the working tree ($(( tree / 1048576 )) MiB)"
    (( total < limit )) || { echo "$part does not fit the 64 MiB a call may carry" >&2; exit 1; }
done
