#!/usr/bin/env bash
# Paper Table 5 (IDInit ablation, ResNet-20, 8 settings, 200 epochs, mixup): all 8 runs as one
# pack of 8 (one grouped network). Needs the full training set in ~/c10: make this call right
# after a call that carried .data/c10-a (or carry both if they fit), carry [".data/c10-b"].
# A run folder brought back earlier can be carried as runs/table5 to resume it.
# Comes back: $OUT/table5.log and $OUT/table5-part*.tar.gz (records, report, fp16 weights).
source "$(dirname "$0")/gpu_common.sh"
need_chunks 0 1 2 3 4
RUN=runs/table5
timeout 560 python3 -m idinit.lab.cli run table5 --device cuda --data "$C10" --out "$RUN" --pack 8 \
    --deadline-s 500 --checkpoint-every 10 "$@" 2>&1 | tee "$OUT/table5.log"
status=${PIPESTATUS[0]}
python3 -m idinit.lab.cli report "$RUN" 2>&1 | tee -a "$OUT/table5.log"
python3 scripts/pack_results.py "$RUN" "$OUT" --prefix table5 --max-files 4
exit "$status"
