#!/usr/bin/env bash
# Bring back what the background queues (scripts/gpu_queue.sh) have finished so far: every run
# folder's records without checkpoints or locks, and the queue logs, as $OUT/runs.tgz; then wait up
# to WAIT_S seconds (default 0) for both queues to end, collecting again after.
#   WAIT_S=560 bash scripts/gpu_collect.sh
set -uo pipefail
OUT=${OUT:?set by the device tool}
collect() {
    tar -czf "$OUT/runs.tgz" --exclude='*.pt' --exclude='.lock' --exclude='checkpoint.sha256' runs logs 2>/dev/null
    ls -l "$OUT/runs.tgz"
    for f in logs/queue-gpu*.log; do echo "== $f"; grep -E "start|end rc|skip|queue done|epoch.*(50|100|150|200)/" "$f" | tail -n 12; done
}
end=$(( $(date +%s) + ${WAIT_S:-0} ))
while (( $(date +%s) < end )); do
    done_count=$(grep -l "queue done" logs/queue-gpu*.log 2>/dev/null | wc -l)
    (( done_count >= $(ls logs/queue-gpu*.log | wc -l) )) && break
    sleep 15
done
collect
nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
