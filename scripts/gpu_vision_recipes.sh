#!/usr/bin/env bash
# Sec. 4.4 scaled down on CIFAR-10, one seed each, on ONE GPU: ViT-S/4 (IDInit vs default, AdamW,
# 100 epochs) and ResNet-50 with a 3x3 stem (IDInit vs Kaiming, SGD, 60 epochs). Our estimate from
# FLOPs (not measured): ~8.5 GFLOP a ViT image and ~7.8 a ResNet-50 image (forward + backward), so
# ~2-3 min a ViT run and ~1.5-2.5 min a ResNet-50 run on an H200 at 25-40% of bf16 peak, plus about
# a minute of torch.compile each: ~10-12 min for the four, so two calls (runs resume from checkpoints).
# Needs the full training set in ~/c10 (gpu_common.sh stages .data/c10-a and .data/c10-b there when
# carried; else a call that carried them must have run on this machine just before).
#   run: bash scripts/gpu_vision_recipes.sh   carry: [".data/c10-b"] (after a call that carried .data/c10-a)
#   again while the machine is warm: the same command resumes from the checkpoints left in runs/ there
# Settings (environment): GPU (default 0), EXPS (default "vit-cifar resnet50-cifar"), BUDGET_S
# (default 560: the call ends within it, shared equally by the experiments of EXPS).
# Comes back: $OUT/vision.log and $OUT/<experiment>-records.tar.gz (records, report; no weights): 3 files.
source "$(dirname "$0")/gpu_common.sh"
export CUDA_VISIBLE_DEVICES=${GPU:-0}
need_chunks 0 1 2 3 4
EXPS=${EXPS:-vit-cifar resnet50-cifar}
BUDGET_S=${BUDGET_S:-560}
count=$(echo $EXPS | wc -w)
share=$(( BUDGET_S / count ))
status=0
for exp in $EXPS; do
    timeout $((share - 20)) python3 -m idinit.lab.cli run "$exp" --device cuda --data "$C10" --out "runs/$exp" \
        --deadline-s $((share - 50)) --checkpoint-every 5 "$@" 2>&1 | tee -a "$OUT/vision.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    timeout 15 python3 -m idinit.lab.cli report "runs/$exp" 2>&1 | tail -n 8 | tee -a "$OUT/vision.log"
    # records and reports only: a ViT-S or ResNet-50 in fp16 is 42-47 MB, over the 16 MB a returned file may
    # have; the checkpoints stay in runs/ on this machine, where the next call (while it is warm) resumes them
    tar -czf "$OUT/$exp-records.tar.gz" --exclude='*.pt' -C runs "$exp" && ls -l "$OUT/$exp-records.tar.gz"
done
exit "$status"
