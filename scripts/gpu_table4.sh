#!/usr/bin/env bash
# Paper Table 4 (text classification, 60 configurations x 5 seeds = 300 short runs) on ONE GPU,
# resumable: a second call with the run folder carried back skips finished runs.
# Stage the text data once in the checkout (3.6 MB) and carry it:
#   mkdir -p .data/text && cp ../shared/data/{sst2-sent-*.tsv,trec6-*.tsv,glove.6B.50d.sst2-trec.*} .data/text/
#   run: bash scripts/gpu_table4.sh    carry: [".data/text"]
#   resume: tar -xzf <files_at>/table4-part*.tar.gz -C runs   (gives runs/table4), carry ".data/text", "runs/table4"
# Settings (environment): GPU (default 0: the only GPU this uses; the others stay free for other jobs),
# WORKERS (default 12 processes sharing that GPU), BUDGET_S (default 470: the whole call, report and
# packing included, ends within it). Extra arguments go to `idinit run` (e.g. --only '*-glove-*' --seeds 0,1).
# Runs go seed by seed, slowest first (table4.run_order): cut short, the table has every cell with fewer seeds.
# Comes back: $OUT/table4.log, $OUT/table4-part*.tar.gz (records, report; no weights are kept): <= 5 files.
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
export CUDA_VISIBLE_DEVICES=${GPU:-0}
OUT=${OUT:-/tmp/idinit-out}
TEXT=${TEXT:-.data/text}
RUN=${RUN:-runs/table4}
WORKERS=${WORKERS:-12}
BUDGET_S=${BUDGET_S:-470}
mkdir -p "$OUT"
for f in sst2-sent-train.tsv sst2-sent-dev.tsv sst2-sent-test.tsv trec6-train.tsv trec6-test.tsv \
         glove.6B.50d.sst2-trec.f16.npy glove.6B.50d.sst2-trec.vocab.txt; do
    [ -f "$TEXT/$f" ] || { echo "missing $TEXT/$f (stage it: see this script's header)" >&2; exit 3; }
done
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a smoke test of this script on a machine without a GPU
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if '$DEVICE' == 'cuda' else '$DEVICE', flush=True)" || exit 1
# Tiny models: each step waits on Python launching kernels, so several worker processes share the GPU.
# Runs stop at an epoch boundary before the deadline; the last 60 s are for the report and the packing.
start=$(date +%s)
timeout $((BUDGET_S - 30)) python3 -m idinit.lab.cli run table4 --device "$DEVICE" --data "$TEXT" --out "$RUN" \
    --workers "$WORKERS" --deadline-s $((BUDGET_S - 60)) "$@" 2>&1 | tee "$OUT/table4.log"
status=${PIPESTATUS[0]}
finished=$(ls "$RUN"/*/seed*/summary.json 2>/dev/null | wc -l)
echo "table4: $finished run(s) finished in $RUN after $(( $(date +%s) - start )) s" | tee -a "$OUT/table4.log"
timeout 25 python3 -m idinit.lab.cli report "$RUN" 2>&1 | tail -n 30 | tee -a "$OUT/table4.log"
python3 scripts/pack_results.py "$RUN" "$OUT" --prefix table4 --max-files 4
exit "$status"
