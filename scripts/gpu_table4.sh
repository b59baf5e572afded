#!/usr/bin/env bash
# Paper Table 4 (text classification, 60 configurations x 5 seeds = 300 short runs) on one GPU,
# resumable: a second call with the same run folder carried back skips finished runs.
# Stage the text data once in the checkout (3.6 MB) and carry it:
#   mkdir -p .data/text && cp ../shared/data/{sst2-sent-*.tsv,trec6-*.tsv,glove.6B.50d.sst2-trec.*} .data/text/
#   run: bash scripts/gpu_table4.sh    carry: [".data/text"]   (add "runs/table4" to resume)
# Extra arguments go to `idinit run` (e.g. --only 'sst2-*' --seeds 0,1).
# Comes back: $OUT/table4.log, $OUT/table4-part*.tar.gz (records and report; no weights are kept).
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-/tmp/idinit-out}
TEXT=${TEXT:-.data/text}
RUN=${RUN:-runs/table4}
mkdir -p "$OUT"
for f in sst2-sent-train.tsv sst2-sent-dev.tsv sst2-sent-test.tsv trec6-train.tsv trec6-test.tsv \
         glove.6B.50d.sst2-trec.f16.npy glove.6B.50d.sst2-trec.vocab.txt; do
    [ -f "$TEXT/$f" ] || { echo "missing $TEXT/$f (stage it: see this script's header)" >&2; exit 3; }
done
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), flush=True)" || exit 1
# Tiny models: the GPU waits on Python, so several worker processes share it.
timeout 570 python3 -m idinit.lab.cli run table4 --device cuda --data "$TEXT" --out "$RUN" --workers 8 \
    --deadline-s 520 "$@" 2>&1 | tee "$OUT/table4.log"
status=${PIPESTATUS[0]}
python3 -m idinit.lab.cli report "$RUN" 2>&1 | tee -a "$OUT/table4.log"
python3 scripts/pack_results.py "$RUN" "$OUT" --prefix table4 --max-files 4
exit "$status"
