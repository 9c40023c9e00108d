#!/bin/sh
# Remove the edge-agent service installed by systemd/install.sh. Keeps /etc/edge-agent (your configuration)
# and /var/lib/edge-agent unless --purge is given.
#
# Options:
#   --root DIR       operate under DIR instead of / (tests)
#   --prefix DIR     the venv location used at install time (default /opt/edge-agent)
#   --purge          also remove /etc/edge-agent, /var/lib/edge-agent, /var/cache/edge-agent and the user
#   --no-systemctl   do not run systemctl stop/disable/daemon-reload
set -eu

ROOT=""
PREFIX=/opt/edge-agent
PURGE=0
NO_SYSTEMCTL=0

die() { echo "uninstall.sh: $*" >&2; exit 1; }
say() { echo "uninstall.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
        --purge) PURGE=1; shift ;;
        --no-systemctl) NO_SYSTEMCTL=1; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
case "$PREFIX" in /?*) ;; *) die "--prefix must be an absolute path other than /, got $PREFIX" ;; esac
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then die "run as root (sudo), or pass --root DIR"; fi

UNIT="$ROOT/etc/systemd/system/edge-agent.service"
if [ "$NO_SYSTEMCTL" -eq 0 ] && [ -z "$ROOT" ] && [ -e "$UNIT" ]; then
    systemctl disable --now edge-agent.service || say "warning: could not stop/disable edge-agent.service"
fi
rm -f "$UNIT"
rm -f "$ROOT/etc/systemd/system/multi-user.target.wants/edge-agent.service"
if [ "$NO_SYSTEMCTL" -eq 0 ] && [ -z "$ROOT" ]; then systemctl daemon-reload; fi

rm -rf "$ROOT$PREFIX" "$ROOT/usr/share/edge-agent" "$ROOT/usr/share/doc/edge-agent"
say "removed the unit, $PREFIX, /usr/share/edge-agent"

if [ "$PURGE" -eq 1 ]; then
    rm -rf "$ROOT/etc/edge-agent" "$ROOT/var/lib/edge-agent" "$ROOT/var/cache/edge-agent" \
        "$ROOT/var/lib/private/edge-agent" "$ROOT/var/cache/private/edge-agent"
    if [ -n "$ROOT" ]; then
        if grep -q '^edge-agent:' "$ROOT/etc/passwd" 2>/dev/null; then userdel --root "$ROOT" edge-agent; fi
    elif getent passwd edge-agent >/dev/null 2>&1; then
        userdel edge-agent
    fi
    say "purged configuration, state, cache and the edge-agent user"
else
    say "kept /etc/edge-agent (use --purge to remove it)"
fi
