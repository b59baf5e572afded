#!/usr/bin/env bash
# Bring back what the background queues (scripts/gpu_queue.sh) have finished so far: every run
# folder's records without checkpoints or locks, and the queue logs (runs/logs), as $OUT/runs.tgz,
# after waiting up to WAIT_S seconds (default 0) for every queue to end.
#   WAIT_S=560 bash scripts/gpu_collect.sh
# Once no queue runs any more, the runs the deadline cut short (a checkpoint and no summary) also come
# back whole, checkpoints included, as $OUT/resume.tgz, if it fits beside runs.tgz in what a call may
# bring back (RESUME_MIB, default 56). The next machine resumes them from there: one call carrying
# .data/resume (that file, copied there) runs `tar -xzf .data/resume/resume.tgz`, and the queue line
# that made them, with the same --out, goes on from their last checkpoint (every 10 epochs).
set -uo pipefail
OUT=${OUT:?set by the device tool}
collect() {
    tar -czf "$OUT/runs.tgz" --exclude='*.pt' --exclude='.lock' --exclude='.experiment.lock' --exclude='checkpoint.sha256' runs 2>/dev/null
    ls -l "$OUT/runs.tgz"
    for f in runs/logs/queue-gpu*.log; do echo "== $f"; grep -E "start|end rc|skip|queue done|epoch.*(50|100|150|200)/" "$f" | tail -n 12; done
}
cut_short() {  # run folders with a checkpoint and no summary: stopped by the deadline, resumable
    find runs -name checkpoint.pt -printf '%h\n' 2>/dev/null | while read -r run; do
        [ -f "$run/summary.json" ] || echo "$run"
    done
}
end=$(( $(date +%s) + ${WAIT_S:-0} ))
# "[g]pu_queue": a pattern that does not match this command's own line, which names the script
while (( $(date +%s) < end )) && pgrep -f "bash scripts/[g]pu_queue.sh" >/dev/null; do
    sleep 10
done
collect
if ! pgrep -f "bash scripts/[g]pu_queue.sh" >/dev/null; then
    mapfile -t runs < <(cut_short)
    if (( ${#runs[@]} )); then
        mapfile -t experiments < <(for run in "${runs[@]}"; do echo "$(dirname "$(dirname "$run")")/experiment.json"; done | sort -u)
        tar -czf "$OUT/resume.tgz" --exclude='.lock' --exclude='.experiment.lock' "${runs[@]}" "${experiments[@]}"
        left=$(( ${RESUME_MIB:-56} * 1048576 - $(stat -c %s "$OUT/runs.tgz") ))
        if (( $(stat -c %s "$OUT/resume.tgz") > left )); then
            echo "resume.tgz ($(du -h "$OUT/resume.tgz" | cut -f1)) does not fit in what is left to bring back; the ${#runs[@]} cut run(s) start over next time"
            rm -f "$OUT/resume.tgz"
        else
            echo "cut short, back with their checkpoints in resume.tgz: ${runs[*]}"
        fi
    fi
fi
nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
