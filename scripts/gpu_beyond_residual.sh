#!/usr/bin/env bash
# Paper appendix C.2 (AllConv x warm-up) and C.6 (Res-112 without BN): one experiment per call,
# resumable across calls (each call stops itself with checkpoints before its 10 minutes).
#   bash scripts/gpu_beyond_residual.sh EXPERIMENT [extra idinit-run options]
#   EXPERIMENT: res112 | res112-warmup5 | res112-optionA | res112-A-centred | allconv-short | allconv
# Every GPU of the host gets its own worker process (idinit run --workers <GPUs>): on one H200 the
# runs go one after another; on nvidia-h200-x8, eight at a time.
# Needs the full training set in ~/c10: make this call right after a call that carried
# .data/c10-a (see gpu_table5.sh), carrying [".data/c10-b"] (+ runs/EXPERIMENT to resume a
# folder brought back earlier: unpack EXPERIMENT-part*.tar.gz into runs/ first).
# Comes back: $OUT/EXPERIMENT.log, $OUT/EXPERIMENT-curves.png, $OUT/EXPERIMENT-first-epochs.md,
# $OUT/EXPERIMENT-part*.tar.gz (records, report, fp16 weights of finished runs, checkpoints of the rest).
source "$(dirname "$0")/gpu_common.sh"
need_chunks 0 1 2 3 4
exp=${1:?usage: gpu_beyond_residual.sh res112|res112-warmup5|res112-optionA|res112-A-centred|allconv-short|allconv [options]}
shift
case $exp in
    res112|res112-warmup5|res112-optionA|res112-A-centred|allconv-short|allconv) ;;
    *) echo "unknown experiment $exp" >&2; exit 2 ;;
esac
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
RUN=runs/$exp
timeout 530 python3 -m idinit.lab.cli run "$exp" --device cuda --data "$C10" --out "$RUN" --workers "$gpus" \
    --deadline-s 450 --checkpoint-every 5 "$@" 2>&1 | tee "$OUT/$exp.log"
status=${PIPESTATUS[0]}
python3 -m idinit.lab.cli report "$RUN" 2>&1 | tee -a "$OUT/$exp.log"
python3 -m idinit.lab.experiments.curves "$RUN" "$OUT/$exp-curves.png" --table "$OUT/$exp-first-epochs.md" \
    2>&1 | tee -a "$OUT/$exp.log"
python3 scripts/pack_results.py "$RUN" "$OUT" --prefix "$exp" --max-files 4
exit "$status"
