#!/usr/bin/env bash
# Unpack the resume archives carried in .data/resume/ (scripts/gpu_collect.sh's resume.tgz: runs a
# deadline cut short, with their checkpoints) into runs/, before the queues start.
#   bash scripts/unpack_resume.sh
# Files already in runs/ win (tar --skip-old-files): a later launch on the same warm machine carries the
# same archive again, and unpacking it over a run that has since finished would put back its old records
# and experiment.json (it did on 2026-11-30: Res-112 Fixup's epochs 16-35 were overwritten by 1-19).
set -uo pipefail
for archive in .data/resume/*.tgz; do
    [ -f "$archive" ] || continue
    tar -xzf "$archive" --skip-old-files || exit 1
    echo "resuming from $archive: $(tar -tzf "$archive" | grep -c '/checkpoint.pt$') run(s) (files already in runs/ kept)"
done
