#!/usr/bin/env bash
# Paper Table 1, ResNet-56: one PART of the grid per call (each ~8-9 minutes on an H200):
#   main           zero_gamma, zero, kaiming, idinit x SGD/Adam, option A        (one pack of 8)
#   optionB        idinit, kaiming x SGD/Adam, option B                           (one pack of 4)
#   gated          rezero, skipinit x SGD/Adam                                    (two packs of 2)
#   fixup          fixup x SGD/Adam (not packable: no BN, scalar biases)          (two single runs)
#   <part>-warmup5 the same runs with a 5-epoch linear warm-up
# Usage: bash scripts/gpu_table1.sh PART [extra idinit-run options, e.g. --seeds 1]
# Needs the full training set in ~/c10 (see gpu_table5.sh); carry runs/table1 to resume a part.
# Comes back: $OUT/table1-PART.log and $OUT/table1-PART-part*.tar.gz.
source "$(dirname "$0")/gpu_common.sh"
need_chunks 0 1 2 3 4
part=${1:?usage: gpu_table1.sh main|optionB|gated|fixup[-warmup5] [options]}
shift
suffix=""
base=$part
if [[ $part == *-warmup5 ]]; then suffix="-warmup5"; base=${part%-warmup5}; fi
case $base in
    main)    names="zero_gamma-sgd zero-sgd kaiming-sgd idinit-sgd zero_gamma-adam zero-adam kaiming-adam idinit-adam" ;;
    optionB) names="idinit-sgd-B kaiming-sgd-B idinit-adam-B kaiming-adam-B" ;;
    gated)   names="rezero-sgd rezero-adam skipinit-sgd skipinit-adam" ;;
    fixup)   names="fixup-sgd fixup-adam" ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
esac
only=()
for n in $names; do only+=("$n$suffix"); done
RUN=runs/table1
timeout 570 python3 -m idinit.lab.cli run table1 --device cuda --data "$C10" --out "$RUN" --pack 8 \
    --only "${only[@]}" --deadline-s 520 --checkpoint-every 10 "$@" 2>&1 | tee "$OUT/table1-$part.log"
status=${PIPESTATUS[0]}
python3 -m idinit.lab.cli report "$RUN" 2>&1 | tee -a "$OUT/table1-$part.log"
python3 scripts/pack_results.py "$RUN" "$OUT" --prefix "table1-$part" --max-files 4
exit "$status"
