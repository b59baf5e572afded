#!/usr/bin/env bash
# Sec. 4.4 scaled down on CIFAR-10: ViT-S/4 (IDInit vs default, 100 epochs) and ResNet-50 with a 3x3
# stem (IDInit vs Kaiming, 60 epochs), one seed each; not timed yet (our FLOP count puts each run at
# a few minutes on one H200). Needs the full training set in ~/c10: make this call right after a call
# that carried .data/c10-a, carry [".data/c10-b"] (and runs/vit-cifar, runs/resnet50-cifar to resume).
# Comes back: $OUT/vision.log and $OUT/{vit-cifar,resnet50-cifar}-part*.tar.gz.
source "$(dirname "$0")/gpu_common.sh"
need_chunks 0 1 2 3 4
status=0
for exp in vit-cifar resnet50-cifar; do
    timeout 270 python3 -m idinit.lab.cli run "$exp" --device cuda --data "$C10" --out "runs/$exp" \
        --deadline-s 240 --checkpoint-every 5 "$@" 2>&1 | tee -a "$OUT/vision.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    python3 -m idinit.lab.cli report "runs/$exp" 2>&1 | tee -a "$OUT/vision.log"
    python3 scripts/pack_results.py "runs/$exp" "$OUT" --prefix "$exp" --max-files 3
done
exit "$status"
