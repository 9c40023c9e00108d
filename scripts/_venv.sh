# shellcheck shell=bash
# Shared by scripts/quickstart.sh and scripts/test.sh: create .venv with Python >= 3.11 and install the project
# with the given extras, skipping the install when pyproject.toml has not changed since the last one.
set -euo pipefail

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "edge-agent needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

# ensure_venv SPEC   e.g. ensure_venv "."  or  ensure_venv ".[build,bench,dev]"
ensure_venv() {
    local spec="$1" py stamp want
    if [ ! -x .venv/bin/python ]; then
        py=$(find_python)
        echo "==> creating .venv with $("$py" --version)" >&2
        if ! "$py" -m venv .venv; then
            echo "python venv module missing: on Debian run 'sudo apt-get install python3-venv'" >&2
            return 1
        fi
    fi
    stamp=.venv/.edge-agent-installed
    want="$spec $(sha256sum pyproject.toml | cut -c1-16)"
    if [ -f "$stamp" ] && grep -qxF "$want" "$stamp"; then
        return 0
    fi
    echo "==> installing edge-agent $spec into .venv" >&2
    .venv/bin/python -m pip install --quiet --upgrade pip >&2
    .venv/bin/python -m pip install --quiet -e "$spec" >&2
    echo "$want" >>"$stamp"
}
