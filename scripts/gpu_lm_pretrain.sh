#!/usr/bin/env bash
# Sec. 4.6 scaled down: BERT-style MLM and GPT-2-style causal LM, IDInit vs default (4 runs, about
# a minute each on one H200 by our estimate; not measured). Make the token file here first:
#   apt-get download python3.11-doc && python scripts/prepare_lm_corpus.py python3.11-doc_*.deb --out .data/lm
#   run: bash scripts/gpu_lm_pretrain.sh    carry: [".data/lm"]   (5.6 MB)
# Extra arguments go to `idinit run` (e.g. --set steps=6000). Comes back: $OUT/lm-pretrain.log and
# $OUT/lm-pretrain-part*.tar.gz (records, report.md, loss.png).
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/idinit-out}
RUN=${RUN:-runs/lm-pretrain}
mkdir -p "$OUT"
[ -f .data/lm/tokens.u16.npy ] || { echo "missing .data/lm/tokens.u16.npy (see this script's header)" >&2; exit 3; }
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(), flush=True)" || exit 1
timeout 560 python3 -m idinit.lab.cli run lm-pretrain --device cuda --out "$RUN" --deadline-s 500 "$@" 2>&1 \
    | tee "$OUT/lm-pretrain.log"
status=${PIPESTATUS[0]}
python3 scripts/lm_report.py "$RUN" 2>&1 | tee -a "$OUT/lm-pretrain.log"
python3 scripts/pack_results.py "$RUN" "$OUT" --prefix lm-pretrain --max-files 4
exit "$status"
