#!/usr/bin/env bash
# The test command (README, second command; .ci/run calls exactly this).
# Sets up .venv with the build/bench/dev extras, then runs ruff, mypy (strict on edge_agent) and pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
ensure_venv ".[build,bench,dev]"
echo "==> ruff" >&2
.venv/bin/ruff check edge_agent build tests
echo "==> mypy (strict on edge_agent)" >&2
.venv/bin/mypy edge_agent
echo "==> pytest" >&2
exec .venv/bin/pytest "$@"
