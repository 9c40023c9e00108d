"""Transport security for the PUB socket: endpoint classification, CURVE key pairs, key-file permission checks.

The rule (see docs/security.md): a loopback ``tcp://`` endpoint, an ``ipc://`` path or an ``inproc://`` name is
local and may be plain; any other endpoint (``tcp://0.0.0.0``, ``tcp://*``, a LAN address, an interface or host
name) is reachable from other hosts and needs CURVE (``security.curve = true`` with a server secret key and a
directory of allowed client public keys) unless ``security.allow_insecure_remote = true`` is set explicitly.
CURVE can be switched on for any endpoint, loopback included.

Key files are ZeroMQ certificates as ``zmq.auth.create_certificates`` writes them: ``NAME.key`` (public, 0644)
and ``NAME.key_secret`` (public + secret, 0600). A secret key file readable or writable by group/others is
refused, and so is an allowed-clients directory (or a key in it) that anyone may write to.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import zmq.auth

from edge_agent.settings import ConfigError, SecuritySettings

log = logging.getLogger(__name__)

EndpointKind = Literal["local", "loopback", "remote"]
TransportMode = Literal["plain", "curve", "insecure_remote"]

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
LOOPBACK_NAMES = frozenset({"localhost", "lo"})  # "lo": the Linux loopback interface


class SecurityError(ConfigError):
    """A key, a key file or the transport security configuration is unusable; the message says how to fix it."""


@dataclass(frozen=True)
class CurveServerKeys:
    """What the PUB socket needs for CURVE: its own key pair and the directory of allowed client public keys."""

    public: bytes
    secret: bytes
    allowed_clients_dir: Path


@dataclass(frozen=True)
class CurveClientKeys:
    """What a SUB socket needs for CURVE: the server's public key and the client's own key pair."""

    server_public: bytes
    public: bytes
    secret: bytes


# -- endpoint classification (pure) ----------------------------------------------------------------------------
def _tcp_host(endpoint: str) -> str:
    rest = endpoint[len("tcp://"):]
    if ";" in rest:  # "source;destination" (connect syntax): the address that matters is the destination
        rest = rest.split(";", 1)[1]
    if rest.startswith("["):
        return rest[1:rest.find("]")] if "]" in rest else rest[1:]
    host, _, _port = rest.rpartition(":")
    return host if host else rest


def classify_endpoint(endpoint: str) -> EndpointKind:
    """``local`` (ipc://, inproc://), ``loopback`` (tcp:// on 127.0.0.0/8, ::1, localhost, lo) or ``remote``.

    Anything that is not provably loopback is ``remote``: wildcards (``*``, ``0.0.0.0``, ``::``), LAN or public
    addresses, interface names (``eth0``), host names, and transports other than tcp/ipc/inproc.
    """
    scheme = endpoint.split("://", 1)[0].lower() if "://" in endpoint else ""
    if scheme in ("ipc", "inproc"):
        return "local"
    if scheme != "tcp":
        return "remote"
    host = _tcp_host(endpoint).lower()
    if host in LOOPBACK_NAMES:
        return "loopback"
    try:
        return "loopback" if ipaddress.ip_address(host.split("%", 1)[0]).is_loopback else "remote"
    except ValueError:
        return "remote"  # "*", an interface name or a host name


def requires_curve(endpoint: str) -> bool:
    """True if binding ``endpoint`` exposes the stream to other hosts (so it must be CURVE-protected)."""
    return classify_endpoint(endpoint) == "remote"


def transport_mode(endpoint: str, security: SecuritySettings) -> TransportMode:
    """Decide how ``endpoint`` is bound; raises SecurityError (a one-liner naming the key) if it may not be.

    ``curve``: security.curve is on (keys are checked later, when loaded). ``insecure_remote``: a non-loopback
    endpoint without CURVE, allowed only by security.allow_insecure_remote. ``plain``: a local endpoint.
    """
    if security.curve:
        if security.server_secret_key is None:
            raise SecurityError("security.server_secret_key: required when security.curve = true "
                                "(create one with `edge-agent keygen --out DIR --name server`)")
        if security.allowed_clients_dir is None:
            raise SecurityError("security.allowed_clients_dir: required when security.curve = true (a directory "
                                "holding the public .key file of every client allowed to subscribe)")
        return "curve"
    if requires_curve(endpoint):
        if security.allow_insecure_remote:
            return "insecure_remote"
        raise SecurityError(
            f"publisher.endpoint {endpoint}: reachable from other hosts, so it needs CURVE encryption: set "
            "security.curve = true with security.server_secret_key and security.allowed_clients_dir (keys from "
            "`edge-agent keygen`), or bind tcp://127.0.0.1:PORT, or set security.allow_insecure_remote = true "
            "to publish unencrypted")
    return "plain"


# -- key files -------------------------------------------------------------------------------------------------
def _mode(path: Path, what: str) -> int:
    try:
        return path.stat().st_mode
    except FileNotFoundError:
        raise SecurityError(f"{what} {path}: not found") from None
    except OSError as exc:
        raise SecurityError(f"{what} {path}: cannot read ({exc.strerror})") from None


def check_secret_key_file(path: Path, what: str = "secret key file") -> None:
    """Refuse a secret key file that is not a regular file or that group/others may read or write."""
    mode = _mode(path, what)
    if not stat.S_ISREG(mode):
        raise SecurityError(f"{what} {path}: not a regular file")
    if mode & 0o077:
        raise SecurityError(f"{what} {path}: permissions {stat.S_IMODE(mode):04o} are too open (group/others "
                            f"can access it); run `chmod 600 {path}`")


def check_allowed_clients_dir(path: Path, what: str = "security.allowed_clients_dir") -> list[Path]:
    """The public ``*.key`` files of an allowed-clients directory, after checking nobody else can add to it.

    Refuses a missing path, a non-directory, a world-writable directory or key file, and a directory with no
    ``*.key`` file (nobody could subscribe).
    """
    mode = _mode(path, what)
    if not stat.S_ISDIR(mode):
        raise SecurityError(f"{what} {path}: not a directory")
    if mode & stat.S_IWOTH:
        raise SecurityError(f"{what} {path}: world-writable (anyone could allow a key); run `chmod o-w {path}`")
    keys = sorted(p for p in path.glob("*.key") if p.is_file())
    for k in keys:
        if k.stat().st_mode & stat.S_IWOTH:
            raise SecurityError(f"{what}: {k} is world-writable; run `chmod 644 {k}`")
    if not keys:
        raise SecurityError(f"{what} {path}: no client public keys (*.key) in it; copy each allowed client's "
                            "NAME.key there (`edge-agent keygen --out DIR --name client-NAME` makes one)")
    return keys


def _load_certificate(path: Path, what: str) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except PermissionError:
        raise SecurityError(f"{what} {path}: permission denied; it must be owned by (or readable for) the user "
                            "running edge-agent (e.g. `chown edge-agent: FILE`)") from None
    except OSError as exc:
        raise SecurityError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise SecurityError(f"{what} {path}: not a ZeroMQ certificate ({exc})") from None


def load_public_key(path: Path, what: str = "public key file") -> bytes:
    """The Z85 public key in a ``.key`` (or ``.key_secret``) certificate file."""
    _mode(path, what)
    public, _secret = _load_certificate(path, what)
    return public


def load_keypair(path: Path, what: str = "secret key file") -> tuple[bytes, bytes]:
    """``(public, secret)`` from a ``.key_secret`` certificate file, after the permission check."""
    check_secret_key_file(path, what)
    public, secret = _load_certificate(path, what)
    if secret is None:
        raise SecurityError(f"{what} {path}: holds no secret key (a public .key file?); give the .key_secret file")
    return public, secret


def server_keys(security: SecuritySettings) -> CurveServerKeys:
    """Load and check the daemon's CURVE keys from the settings (security.curve must be on)."""
    if security.server_secret_key is None or security.allowed_clients_dir is None:
        raise SecurityError("security.server_secret_key and security.allowed_clients_dir: both are required "
                            "when security.curve = true")
    public, secret = load_keypair(security.server_secret_key, "security.server_secret_key")
    keys = check_allowed_clients_dir(security.allowed_clients_dir)
    log.info("CURVE: %d allowed client key(s) in %s", len(keys), security.allowed_clients_dir)
    return CurveServerKeys(public=public, secret=secret, allowed_clients_dir=security.allowed_clients_dir)


def client_keys(server_public_key: Path, client_secret_key: Path) -> CurveClientKeys:
    """Load a subscriber's CURVE keys: the server's public ``.key`` and the client's own ``.key_secret``."""
    server_public = load_public_key(server_public_key, "server public key")
    public, secret = load_keypair(client_secret_key, "client secret key")
    return CurveClientKeys(server_public=server_public, public=public, secret=secret)


def generate_keypair(out_dir: Path, name: str = "server") -> tuple[Path, Path]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) into ``out_dir``; returns their paths.

    The files are written in a private (0700) temporary directory and moved into place, so the secret key is
    never readable by others, whatever the umask. Existing files are never overwritten. ``out_dir`` is created
    with mode 0700 if missing.
    """
    if not KEY_NAME.match(name):
        raise SecurityError(f"--name {name!r}: use letters, digits, '-' and '_' (e.g. server, client-kiosk1)")
    public_dst, secret_dst = out_dir / f"{name}.key", out_dir / f"{name}.key_secret"
    for dst in (public_dst, secret_dst):
        if dst.exists():
            raise SecurityError(f"{dst}: already exists; remove it first or choose another --name")
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".keygen-", dir=out_dir))
    except OSError as exc:
        raise SecurityError(f"--out {out_dir}: cannot create ({exc.strerror})") from None
    try:
        public_tmp, secret_tmp = (Path(p) for p in zmq.auth.create_certificates(tmp, name))
        os.chmod(secret_tmp, 0o600)
        os.chmod(public_tmp, 0o644)
        os.replace(secret_tmp, secret_dst)
        os.replace(public_tmp, public_dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote CURVE key pair %s and %s", public_dst, secret_dst)
    return public_dst, secret_dst
