#!/usr/bin/env bash
# Classifier architecture speed on the CPU: MobileNetV3-Small (160x160) vs EfficientNet-B0 (224x224 and 160x160),
# each binary (K = 2), through the daemon's hot path (edge-bench A/B, same detector, 1 thread, 4-face frame).
# Latency depends on the graph, not on the weights, so the models are exported from random initialisation
# (build.export.classifier, with its ORT parity check) into a scratch directory; nothing under models/ changes.
# Needs the build extra (torch). Run on an otherwise idle machine: [NOTE="..."] benchmarks/classifier_archs.sh
# (results go to benchmarks/results and REPORT.md is regenerated; OUT=/tmp/x writes elsewhere, REPEAT=20 is quicker)
set -euo pipefail
cd "$(dirname "$0")/.."
NOTE="${NOTE:-}"
WORK="${WORK:-$(mktemp -d /tmp/cls-archs.XXXXXX)}"
DET=models/detector/acwface-dcn
OUT="${OUT:-benchmarks/results}"
REPEAT="${REPEAT:-100}"
BENCH=(.venv/bin/python -m edge_agent.bench.cli)

.venv/bin/python - "$WORK" <<'PY'
import sys
from pathlib import Path

import torch

from build.export.classifier import export_classifier
from build.nets.classifiers import build_classifier

work = Path(sys.argv[1])
torch.manual_seed(0)
for model_id, arch, size in (("bench-mnv3s-160", "mobilenet_v3_small", 160),
                             ("bench-effb0-224", "efficientnet_b0", 224),
                             ("bench-effb0-160", "efficientnet_b0", 160)):
    res = export_classifier(build_classifier(arch, 2), ["happy", "other"], work / model_id, model_id=model_id,
                            source="random initialisation (speed benchmark only)",
                            recipe="benchmarks/classifier_archs.sh", licence="MIT", input_size=size)
    print(model_id, res.params, "params", res.manifest.size_bytes, "bytes")
PY

for src in synthetic:4 sample:single_face.mp4; do
    "${BENCH[@]}" --note "$NOTE" --detector "$DET" --threads 1 --repeat "$REPEAT" --out-dir "$OUT" --source "$src" \
        --compare "classifier=$WORK/bench-effb0-224" "classifier=$WORK/bench-mnv3s-160"
    "${BENCH[@]}" --note "$NOTE" --detector "$DET" --threads 1 --repeat "$REPEAT" --out-dir "$OUT" --source "$src" \
        --compare "classifier=$WORK/bench-effb0-160" "classifier=$WORK/bench-mnv3s-160"
done
"${BENCH[@]}" report --results "$OUT"
