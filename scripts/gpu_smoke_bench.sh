#!/usr/bin/env bash
# GPU smoke test + benchmark, ~5 minutes on a bare H200 (mostly torch.compile warm-ups).
# Needs only .data/c10-b (carry [".data/c10-b"]).
#   every variant eager (bf16, channels_last); compiled stop + resume; packed x4 compiled;
#   bench ResNet-56 batch 1024: eager, compiled, 4 processes at once, 8 models packed.
# Comes back: $OUT/smoke.log, $OUT/bench.log, $OUT/bench.json, $OUT/smoke-part0.tar.gz
source "$(dirname "$0")/gpu_common.sh"
need_chunks 3 4
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv
timeout 200 python3 scripts/gpu_smoke.py "$C10" /tmp/smoke 2>&1 | tee "$OUT/smoke.log"
smoke=${PIPESTATUS[0]}
timeout 330 python3 -m idinit.lab.cli bench --device cuda --archs resnet56 --batch 1024 --steps 30 \
    --concurrent 4 --packed 8 --out "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
bench=${PIPESTATUS[0]}
python3 scripts/pack_results.py /tmp/smoke "$OUT" --prefix smoke --max-files 1
echo "smoke exit $smoke, bench exit $bench"
exit $(( smoke || bench ))
