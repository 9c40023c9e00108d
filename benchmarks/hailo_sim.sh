#!/usr/bin/env bash
# "Hailo on paper": the Pi 5 + Hailo latency model and the real pipeline on the simulated Hailo device
# (docs/hailo.md, "Projected performance"). Usage: [NOTE="..."] benchmarks/hailo_sim.sh
# Run on an otherwise idle machine; results go to benchmarks/results/*hailo-sim*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=(.venv/bin/python -m edge_agent.bench.cli hailo-sim)
NOTE="${NOTE:-}"

# Hailo-8 on a stock Pi 5 (PCIe 2.0 x1): model + simulated pipeline (capture=file and capture=memory).
"${BENCH[@]}" --note "$NOTE" --arch hailo8 --pcie gen2x1
# ... with two detections in flight (pipeline.detect_workers = 2).
"${BENCH[@]}" --note "$NOTE" --arch hailo8 --pcie gen2x1 --detect-workers 2
# The same with PCIe 3.0 x1 (dtparam=pciex1_gen=3), and the Hailo-8L (AI Kit) on both links.
"${BENCH[@]}" --note "$NOTE" --arch hailo8 --pcie gen3x1
"${BENCH[@]}" --note "$NOTE" --arch hailo8l --pcie gen2x1
"${BENCH[@]}" --note "$NOTE" --arch hailo8l --pcie gen3x1 --no-sim
# Sensitivity to the Pi 5 host scale (2x and 3x this machine's host time).
"${BENCH[@]}" --note "$NOTE" --arch hailo8 --pcie gen2x1 --host-scale 2 --no-sim
"${BENCH[@]}" --note "$NOTE" --arch hailo8 --pcie gen2x1 --host-scale 3 --no-sim
