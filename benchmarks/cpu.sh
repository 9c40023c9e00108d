#!/usr/bin/env bash
# The CPU benchmark runs behind benchmarks/results (see docs/bench.md). Usage: [NOTE="..."] benchmarks/cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=(.venv/bin/python -m edge_agent.bench.cli)
NOTE="${NOTE:-}"
DET=models/detector/retinaface-mnet025
CLS=models/classifier/mnv3s-facex7
ACW=models/detector/acwface-dcn

"${BENCH[@]}" --note "$NOTE" --detector "$DET" --classifier "$CLS" --threads 1
"${BENCH[@]}" --note "$NOTE" --detector "$DET" --classifier "$CLS" --threads 2
"${BENCH[@]}" --note "$NOTE" --detector "$DET" --classifier "$CLS" --threads 1 --source synthetic:4 --repeat 100
"${BENCH[@]}" --note "$NOTE" --detector "$DET" --classifier "$CLS" --threads 1 --repeat 100 \
    --compare "pipeline=edge" "pipeline=reference"
# Larger frames: the reference runs at native resolution and calls the classifier once per face.
"${BENCH[@]}" --note "$NOTE" --detector "$DET" --classifier "$CLS" --threads 1 --repeat 100 \
    --source synthetic:4 --compare "pipeline=edge" "pipeline=reference"
"${BENCH[@]}" --note "$NOTE" --detector "$DET" --classifier "$CLS" --threads 1 --repeat 100 \
    --source sample:face_noface.mov --compare "pipeline=edge" "pipeline=reference"
if [[ -f "$ACW/manifest.json" ]]; then
    "${BENCH[@]}" --note "$NOTE" --detector "$ACW" --classifier "$CLS" --threads 1
    "${BENCH[@]}" --note "$NOTE" --classifier "$CLS" --threads 1 --repeat 100 \
        --compare "detector=$ACW" "detector=$DET"
fi
if [[ -f models/detector/acwface-deploy/manifest.json && -f "$ACW/manifest.json" ]]; then
    # The Hailo deploy form (raw heads, no DeformConv, fixed 640x384) on ONNX Runtime vs the DCN model.
    "${BENCH[@]}" --note "$NOTE" --classifier "$CLS" --threads 1 --repeat 100 \
        --compare "detector=models/detector/acwface-deploy" "detector=$ACW"
fi
"${BENCH[@]}" report
