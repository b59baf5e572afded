#!/usr/bin/env bash
# Start one background queue per GPU (scripts/gpu_queue.sh, under setsid so that it outlives this
# call) with one shared deadLINE MINUTES from now, then wait up to WAIT_S seconds (default 540) and
# bring back what finished (scripts/gpu_collect.sh). Later calls, while the machine stays warm:
#   WAIT_S=570 bash scripts/gpu_collect.sh
# Usage, in the call that carries .data/p5 (see scripts/stage_cifar10_parts.sh):
#   bash scripts/gpu_launch.sh MINUTES QUEUE_FOR_GPU0 [QUEUE_FOR_GPU1 ...]
# MINUTES: the device time left, less about 4 minutes for the last collect and the give-back.
# Runs an earlier machine's deadline cut short come back as resume.tgz (scripts/gpu_collect.sh): copy it
# to .data/resume/ and carry that folder in this call or an earlier one; it is unpacked into runs/ here
# before the queues start (scripts/unpack_resume.sh), and the queue line that made those runs resumes them.
set -uo pipefail
minutes=${1:?usage: gpu_launch.sh MINUTES QUEUE_FOR_GPU0 [QUEUE_FOR_GPU1 ...]}
shift
(( $# >= 1 )) || { echo "name at least one queue file" >&2; exit 2; }
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
(( $# <= gpus )) || { echo "$# queues for $gpus GPU(s)" >&2; exit 2; }
for queue in "$@"; do [ -f "$queue" ] || { echo "no queue file $queue" >&2; exit 2; }; done
end=$(( $(date +%s) + minutes * 60 ))
mkdir -p runs/logs
bash "$(dirname "$0")/unpack_resume.sh" || exit 1
gpu=0
for queue in "$@"; do
    OUT=/tmp/queue-out-$gpu setsid nohup bash scripts/gpu_queue.sh "$queue" "$gpu" "$end" \
        >"runs/logs/launch-gpu$gpu.out" 2>&1 </dev/null &
    echo "GPU $gpu: $queue until $(date -d @"$end" +%T)"
    gpu=$(( gpu + 1 ))
done
sleep 20
cat runs/logs/launch-gpu*.out
WAIT_S=${WAIT_S:-540} bash "$(dirname "$0")/gpu_collect.sh"
