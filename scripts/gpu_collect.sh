#!/usr/bin/env bash
# Bring back what the background queues (scripts/gpu_queue.sh) have finished so far: every run
# folder's records without checkpoints or locks, and the queue logs (runs/logs), as $OUT/runs.tgz,
# after waiting up to WAIT_S seconds (default 0) for every queue to end.
#   WAIT_S=560 bash scripts/gpu_collect.sh
set -uo pipefail
OUT=${OUT:?set by the device tool}
collect() {
    tar -czf "$OUT/runs.tgz" --exclude='*.pt' --exclude='.lock' --exclude='checkpoint.sha256' runs 2>/dev/null
    ls -l "$OUT/runs.tgz"
    for f in runs/logs/queue-gpu*.log; do echo "== $f"; grep -E "start|end rc|skip|queue done|epoch.*(50|100|150|200)/" "$f" | tail -n 12; done
}
end=$(( $(date +%s) + ${WAIT_S:-0} ))
# "[g]pu_queue": a pattern that does not match this command's own line, which names the script
while (( $(date +%s) < end )) && pgrep -f "bash scripts/[g]pu_queue.sh" >/dev/null; do
    sleep 10
done
collect
nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
