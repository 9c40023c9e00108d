#!/bin/sh
# Install edge-agent as a systemd service (Raspberry Pi OS / Debian). Idempotent: run it again to upgrade.
#
#   sudo systemd/install.sh                 # from a checkout: user, venv, package, models, config, unit, enable
#
# Options:
#   --root DIR       install under DIR instead of / (a staging tree for tests; the venv is not relocatable)
#   --prefix DIR     where the venv lives at run time (default /opt/edge-agent)
#   --source DIR     the checkout to install from (default: the directory above this script)
#   --python PY      the interpreter for the venv (default python3; needs >= 3.11)
#   --no-deps        install only the edge-agent package, not its PyPI dependencies (offline tests)
#   --no-user        do not create the edge-agent system user (tests; or the user is managed elsewhere)
#   --no-systemctl   do not run systemctl daemon-reload / enable
#   --start          also start (or restart) the service after installing
#
# What it does:
#   1. creates the system user edge-agent (group edge-agent, member of video; home /var/lib/edge-agent)
#   2. creates PREFIX/venv with --system-site-packages (apt's python3-hailort / hailo_platform stays visible)
#   3. pip-installs the package from the checkout into the venv
#   4. copies every model directory with a manifest.json to /usr/share/edge-agent/models (replacing old copies)
#   5. installs /etc/edge-agent/config.toml from systemd/config.example.toml only if no config exists
#   6. installs /etc/systemd/system/edge-agent.service (ExecStart pointing into PREFIX), daemon-reload, enable
set -eu

ROOT=""
PREFIX=/opt/edge-agent
SRC=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
PYTHON=python3
NO_DEPS=0
NO_USER=0
NO_SYSTEMCTL=0
START=0

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
        --source) [ $# -ge 2 ] || die "--source needs a directory"; SRC=$2; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift 2 ;;
        --no-deps) NO_DEPS=1; shift ;;
        --no-user) NO_USER=1; shift ;;
        --no-systemctl) NO_SYSTEMCTL=1; shift ;;
        --start) START=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, got $PREFIX" ;; esac
[ -f "$SRC/pyproject.toml" ] && [ -d "$SRC/edge_agent" ] || die "$SRC is not an edge-agent checkout (no pyproject.toml/edge_agent)"
[ -f "$SRC/systemd/edge-agent.service" ] || die "$SRC/systemd/edge-agent.service missing"
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo), or pass --root DIR for a staging install"
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null \
    || die "$PYTHON is missing or older than 3.11 (Raspberry Pi OS bookworm has 3.11: apt install python3-venv)"

VENV="$ROOT$PREFIX/venv"
MODELS="$ROOT/usr/share/edge-agent/models"
DOCS="$ROOT/usr/share/doc/edge-agent"
CONF_DIR="$ROOT/etc/edge-agent"
UNIT_DIR="$ROOT/etc/systemd/system"

# 1. system user ------------------------------------------------------------------------------------------
in_db() {  # in_db passwd|group NAME: the entry exists (in the staging tree's files under --root)
    if [ -n "$ROOT" ]; then grep -q "^$2:" "$ROOT/etc/$1" 2>/dev/null; else getent "$1" "$2" >/dev/null 2>&1; fi
}
if [ "$NO_USER" -eq 0 ]; then
    set --
    if [ -n "$ROOT" ]; then set -- --root "$ROOT"; fi
    if in_db passwd edge-agent; then
        say "system user edge-agent exists"
    else
        say "creating system user edge-agent"
        useradd "$@" --system --user-group --home-dir /var/lib/edge-agent --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-agent daemon" edge-agent
    fi
    if in_db group video; then usermod "$@" --append --groups video edge-agent; fi
fi

# 2. venv (system site packages: apt's hailo_platform) --------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv --system-site-packages "$VENV"
else
    say "reusing $VENV"
fi

# 3. the package (built from a copy: an in-tree build would write into the checkout's build/ directory) ---
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT INT TERM
cp -R "$SRC/pyproject.toml" "$SRC/edge_agent" "$STAGE/"
if [ -f "$SRC/README.md" ]; then cp "$SRC/README.md" "$STAGE/"; else echo "edge-agent" > "$STAGE/README.md"; fi
find "$STAGE" -name __pycache__ -type d -prune -exec rm -rf {} +
PIP_FLAGS="--disable-pip-version-check --no-input --quiet"
if [ "$NO_DEPS" -eq 1 ]; then PIP_FLAGS="$PIP_FLAGS --no-deps"; fi
say "installing the edge-agent package into $VENV"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install $PIP_FLAGS --upgrade "$STAGE" || die "pip install failed (see above)"
[ -x "$VENV/bin/edge-agent" ] || die "$VENV/bin/edge-agent was not created"

# 4. models -----------------------------------------------------------------------------------------------
mkdir -p "$MODELS"
found=0
for manifest in "$SRC"/models/*/*/manifest.json; do
    [ -f "$manifest" ] || continue
    dir=$(dirname -- "$manifest")
    rel=${dir#"$SRC/models/"}
    rm -rf "$MODELS/$rel"
    mkdir -p "$MODELS/$(dirname -- "$rel")"
    cp -R "$dir" "$MODELS/$rel"
    chmod -R a+rX "$MODELS/$rel"
    found=$((found + 1))
done
[ "$found" -gt 0 ] || die "no models with a manifest.json under $SRC/models (build or fetch them first)"
say "installed $found model(s) to $MODELS"

# 5. configuration (never overwritten) ---------------------------------------------------------------------
mkdir -p "$CONF_DIR"
if [ -e "$CONF_DIR/config.toml" ]; then
    say "keeping existing $CONF_DIR/config.toml (the current example is $DOCS/config.example.toml)"
else
    install -m 0640 "$SRC/systemd/config.example.toml" "$CONF_DIR/config.toml"
    if [ "$NO_USER" -eq 0 ] && [ -z "$ROOT" ]; then chgrp edge-agent "$CONF_DIR/config.toml"; fi
    say "installed $CONF_DIR/config.toml"
fi
mkdir -p "$DOCS"
install -m 0644 "$SRC/systemd/config.example.toml" "$DOCS/config.example.toml"
if [ -f "$SRC/docs/service.md" ]; then install -m 0644 "$SRC/docs/service.md" "$DOCS/service.md"; fi

# 6. unit --------------------------------------------------------------------------------------------------
mkdir -p "$UNIT_DIR"
sed "s#/opt/edge-agent/venv#$PREFIX/venv#g" "$SRC/systemd/edge-agent.service" > "$STAGE/edge-agent.service"
install -m 0644 "$STAGE/edge-agent.service" "$UNIT_DIR/edge-agent.service"
say "installed $UNIT_DIR/edge-agent.service"

if [ "$NO_SYSTEMCTL" -eq 0 ]; then
    if [ -n "$ROOT" ]; then
        systemctl --root="$ROOT" enable edge-agent.service
    else
        systemctl daemon-reload
        systemctl enable edge-agent.service
        if [ "$START" -eq 1 ]; then systemctl restart edge-agent.service; fi
    fi
fi
if [ ! -e /dev/hailo0 ] && [ -z "$ROOT" ]; then
    say "note: no /dev/hailo0 (no Hailo device or driver); backend.kind = \"auto\" will use ONNX Runtime"
fi
say "done. Edit $CONF_DIR/config.toml, then: systemctl start edge-agent; journalctl -u edge-agent -f"
