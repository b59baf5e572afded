#!/usr/bin/env bash
# Run one GPU's queue of jobs in the background until a shared deadline, so that a batch can outlast
# one 10-minute call: start it with setsid in one call, and later calls (while the machine stays
# warm) only wait and collect.
#   bash scripts/gpu_queue.sh QUEUE_FILE GPU DEADLINE_AT        (DEADLINE_AT: unix time)
# Each non-comment line of QUEUE_FILE is "NEED_S COMMAND": the seconds the job needs (measured or
# estimated, said in a comment), then a shell command run with CUDA_VISIBLE_DEVICES=GPU and with
# $DEADLINE_AT and $C10 set. A job is skipped when fewer than NEED_S seconds remain before the
# deadline (a pack cut short loses its runs: checkpoints do not come back), and a failed job does
# not stop the queue. Log: runs/logs/queue-gpuGPU.log, one "start/end/skip" line per job, with the
# jobs' output. It lives under runs/ because each call re-syncs the working tree and removes what
# git does not ignore (a logs/ folder vanished mid-run on 2026-11-30).
source "$(dirname "$0")/gpu_common.sh"
queue=${1:?usage: gpu_queue.sh QUEUE_FILE GPU DEADLINE_AT}
gpu=${2:?GPU index}
export DEADLINE_AT=${3:?unix time}
export CUDA_VISIBLE_DEVICES=$gpu C10
[ -f "$queue" ] || { echo "no queue file $queue" >&2; exit 2; }
mkdir -p runs/logs
log=runs/logs/queue-gpu$gpu.log
while read -r need cmd; do
    [[ -z $need || $need == \#* ]] && continue
    [[ $need =~ ^[0-9]+$ ]] || { echo "bad line (NEED_S first): $need $cmd" >>"$log"; continue; }
    left=$(( ${DEADLINE_AT%.*} - $(date +%s) ))
    if (( left < need )); then echo "$(date +%T) skip ($left s left, needs $need): $cmd" >>"$log"; continue; fi
    echo "$(date +%T) start ($left s left): $cmd" >>"$log"
    t0=$(date +%s)
    bash -c "$cmd" >>"$log" 2>&1 </dev/null
    rc=$?
    echo "$(date +%T) end rc=$rc after $(( $(date +%s) - t0 )) s: $cmd" >>"$log"
done <"$queue"
echo "$(date +%T) queue done" >>"$log"
