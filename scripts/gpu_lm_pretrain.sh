#!/usr/bin/env bash
# Sec. 4.6 scaled down: BERT-style MLM and GPT-2-style causal LM, IDInit vs default: 4 runs of 3,000
# steps, trained side by side on ONE GPU (4 worker processes); our estimate 1-3 min in all on an H200
# (launch-bound: ~10-20 ms a step), not measured. Make the token file here first:
#   apt-get download python3.11-doc && python scripts/prepare_lm_corpus.py python3.11-doc_*.deb --out .data/lm
#   run: bash scripts/gpu_lm_pretrain.sh    carry: [".data/lm"]   (5.6 MB)
# Settings (environment): GPU (default 0), WORKERS (default 4), BUDGET_S (default 420: the call ends
# within it; a run cut by the deadline starts over on the next call, finished ones are kept when
# runs/lm-pretrain is carried back). Extra arguments go to `idinit run` (e.g. --set steps=6000).
# Comes back: $OUT/lm-pretrain.log and $OUT/lm-pretrain-part*.tar.gz (records, report.md, loss.png).
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
export CUDA_VISIBLE_DEVICES=${GPU:-0}
OUT=${OUT:-/tmp/idinit-out}
RUN=${RUN:-runs/lm-pretrain}
WORKERS=${WORKERS:-4}
BUDGET_S=${BUDGET_S:-420}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a smoke test of this script on a machine without a GPU
mkdir -p "$OUT"
[ -f .data/lm/tokens.u16.npy ] || { echo "missing .data/lm/tokens.u16.npy (see this script's header)" >&2; exit 3; }
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name() if '$DEVICE' == 'cuda' else '$DEVICE', flush=True)" || exit 1
timeout $((BUDGET_S - 30)) python3 -m idinit.lab.cli run lm-pretrain --device "$DEVICE" --out "$RUN" \
    --workers "$WORKERS" --deadline-s $((BUDGET_S - 60)) "$@" 2>&1 | tee "$OUT/lm-pretrain.log"
status=${PIPESTATUS[0]}
python3 scripts/lm_report.py "$RUN" 2>&1 | tee -a "$OUT/lm-pretrain.log"
python3 scripts/pack_results.py "$RUN" "$OUT" --prefix lm-pretrain --max-files 4
exit "$status"
