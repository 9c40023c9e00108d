"""Transport security: the endpoint rule (pure), key generation and permission checks, CURVE on real loopback
sockets (allowed client / unknown client / plain client), the insecure-remote escape hatch, and the privacy
rule that the wire schema cannot carry image bytes."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import stat
import time
from pathlib import Path
from typing import Any, get_args

import pytest
import zmq
from pydantic import BaseModel

from edge_agent import messages
from edge_agent.cli import main as cli_main
from edge_agent.messages import WireMessage, encode, example_emotion
from edge_agent.publisher import Publisher, open_publisher
from edge_agent.security import (
    SecurityError,
    check_allowed_clients_dir,
    check_secret_key_file,
    classify_endpoint,
    client_keys,
    generate_keypair,
    load_keypair,
    load_public_key,
    requires_curve,
    server_keys,
    transport_mode,
)
from edge_agent.settings import ConfigError, PublisherSettings, SecuritySettings
from edge_agent.subscriber import Subscriber

# -- the endpoint rule -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "kind"), [
    ("tcp://127.0.0.1:5556", "loopback"),
    ("tcp://127.1.2.3:5556", "loopback"),
    ("tcp://localhost:5556", "loopback"),
    ("tcp://lo:5556", "loopback"),
    ("tcp://[::1]:5556", "loopback"),
    ("tcp://127.0.0.1:*", "loopback"),
    ("ipc:///run/edge-agent/pub.sock", "local"),
    ("inproc://x", "local"),
    ("tcp://0.0.0.0:5556", "remote"),
    ("tcp://*:5556", "remote"),
    ("tcp://[::]:5556", "remote"),
    ("tcp://192.168.1.20:5556", "remote"),
    ("tcp://10.0.0.5:5556", "remote"),
    ("tcp://eth0:5556", "remote"),
    ("tcp://wlan0:5556", "remote"),
    ("tcp://edge-box.local:5556", "remote"),
    ("tcp://[fe80::1%eth0]:5556", "remote"),
    ("pgm://eth0;239.192.1.1:5555", "remote"),
    ("ws://0.0.0.0:5556", "remote"),
])
def test_classify_endpoint(endpoint: str, kind: str) -> None:
    assert classify_endpoint(endpoint) == kind
    assert requires_curve(endpoint) is (kind == "remote")


def test_transport_mode_decisions() -> None:
    plain = SecuritySettings()
    assert transport_mode("tcp://127.0.0.1:5556", plain) == "plain"
    assert transport_mode("ipc:///tmp/x.sock", plain) == "plain"
    assert transport_mode("tcp://0.0.0.0:5556", SecuritySettings(allow_insecure_remote=True)) == "insecure_remote"
    keyed = SecuritySettings(curve=True, server_secret_key=Path("/k/server.key_secret"),
                             allowed_clients_dir=Path("/k/clients"))
    assert transport_mode("tcp://0.0.0.0:5556", keyed) == "curve"
    assert transport_mode("tcp://127.0.0.1:5556", keyed) == "curve"  # CURVE can be forced on loopback
    # CURVE wins over the insecure flag when both are set
    both = keyed.model_copy(update={"allow_insecure_remote": True})
    assert transport_mode("tcp://*:5556", both) == "curve"


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5556", "tcp://*:5556", "tcp://192.168.1.20:5556",
                                      "tcp://eth0:5556"])
def test_remote_endpoint_without_curve_is_a_one_line_config_error(endpoint: str) -> None:
    with pytest.raises(ConfigError) as info:
        transport_mode(endpoint, SecuritySettings())
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"publisher.endpoint {endpoint}: ")
    assert "security.curve" in text and "allow_insecure_remote" in text and "edge-agent keygen" in text


def test_curve_without_keys_names_the_missing_key() -> None:
    with pytest.raises(SecurityError, match=r"^security.server_secret_key: required"):
        transport_mode("tcp://127.0.0.1:1", SecuritySettings(curve=True))
    with pytest.raises(SecurityError, match=r"^security.allowed_clients_dir: required"):
        transport_mode("tcp://127.0.0.1:1", SecuritySettings(curve=True, server_secret_key=Path("/x")))


# -- keys and permissions ----------------------------------------------------------------------------------------


def test_keygen_writes_a_z85_pair_with_safe_modes(tmp_path: Path) -> None:
    out = tmp_path / "new" / "keys"
    public, secret = generate_keypair(out, "server")
    assert public == out / "server.key" and secret == out / "server.key_secret"
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert sorted(p.name for p in out.iterdir()) == ["server.key", "server.key_secret"]  # no temp dir left
    pub, sec = load_keypair(secret)
    assert load_public_key(public) == pub
    assert len(pub) == 40 and len(sec) == 40 and pub != sec
    assert zmq.curve_public(sec) == pub  # a real key pair
    assert b"secret-key" not in public.read_bytes()
    with pytest.raises(SecurityError, match="already exists"):
        generate_keypair(out, "server")
    with pytest.raises(SecurityError, match="--name"):
        generate_keypair(out, "../evil")


def test_keygen_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["keygen", "--out", str(tmp_path), "--name", "client-kiosk1"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "client-kiosk1.key") in out and "allowed_clients_dir" in out
    assert stat.S_IMODE((tmp_path / "client-kiosk1.key_secret").stat().st_mode) == 0o600
    assert cli_main(["keygen", "--out", str(tmp_path), "--name", "client-kiosk1"]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660, 0o644])
def test_secret_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    _public, secret = generate_keypair(tmp_path, "server")
    os.chmod(secret, mode)
    with pytest.raises(SecurityError, match=rf"permissions {mode:04o} are too open.*chmod 600"):
        load_keypair(secret)
    os.chmod(secret, 0o400)
    check_secret_key_file(secret)  # read-only for the owner is fine


def test_public_key_file_is_not_a_secret_key(tmp_path: Path) -> None:
    public, _secret = generate_keypair(tmp_path, "server")
    os.chmod(public, 0o600)
    with pytest.raises(SecurityError, match="holds no secret key"):
        load_keypair(public)
    with pytest.raises(SecurityError, match="not found"):
        load_keypair(tmp_path / "missing.key_secret")
    (tmp_path / "junk.key").write_text("hello\n")
    with pytest.raises(SecurityError, match="not a ZeroMQ certificate"):
        load_public_key(tmp_path / "junk.key")


def test_allowed_clients_dir_checks(tmp_path: Path) -> None:
    clients = tmp_path / "clients"
    clients.mkdir(mode=0o755)
    os.chmod(clients, 0o755)
    with pytest.raises(SecurityError, match="no client public keys"):
        check_allowed_clients_dir(clients)
    keys = tmp_path / "k"
    public, _ = generate_keypair(keys, "client-a")
    shutil.copy(public, clients / "client-a.key")
    assert check_allowed_clients_dir(clients) == [clients / "client-a.key"]
    os.chmod(clients, 0o777)
    with pytest.raises(SecurityError, match=r"world-writable.*chmod o-w"):
        check_allowed_clients_dir(clients)
    os.chmod(clients, 0o775)  # group-writable is the owner's choice; world-writable is not
    check_allowed_clients_dir(clients)
    os.chmod(clients / "client-a.key", 0o666)
    with pytest.raises(SecurityError, match=r"client-a\.key is world-writable"):
        check_allowed_clients_dir(clients)
    with pytest.raises(SecurityError, match="not a directory"):
        check_allowed_clients_dir(public)
    with pytest.raises(SecurityError, match="not found"):
        check_allowed_clients_dir(tmp_path / "nope")


# -- CURVE on real loopback sockets ------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A server pair, an allowed client pair (public key in the allow-list) and an unknown client pair."""
    server_pub, server_sec = generate_keypair(tmp_path / "server", "server")
    ok_pub, ok_sec = generate_keypair(tmp_path / "ok", "client-ok")
    _, other_sec = generate_keypair(tmp_path / "other", "client-other")
    clients = tmp_path / "allowed"
    clients.mkdir()
    shutil.copy(ok_pub, clients / "client-ok.key")
    return {"server_pub": server_pub, "server_sec": server_sec, "clients": clients, "ok_sec": ok_sec,
            "other_sec": other_sec}


def _curve_settings(pki: dict[str, Path]) -> SecuritySettings:
    return SecuritySettings(curve=True, server_secret_key=pki["server_sec"], allowed_clients_dir=pki["clients"])


def _pump(pub: Publisher, subs: list[Subscriber], seconds: float) -> list[int]:
    """Publish for ``seconds`` and count what each subscriber receives."""
    got = [0] * len(subs)
    payload = encode(example_emotion())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pub.send("emotion.v1.cam0", payload)
        for i, s in enumerate(subs):
            while s.receive_raw(0.0) is not None:
                got[i] += 1
        time.sleep(0.02)
    return got


def test_curve_publisher_admits_only_allowed_clients(pki: dict[str, Path]) -> None:
    pub = open_publisher(PublisherSettings(endpoint="tcp://127.0.0.1:*"), _curve_settings(pki))
    assert pub.curve
    allowed = Subscriber(pub.endpoint, curve=client_keys(pki["server_pub"], pki["ok_sec"]))
    unknown = Subscriber(pub.endpoint, curve=client_keys(pki["server_pub"], pki["other_sec"]))
    plain = Subscriber(pub.endpoint)
    try:
        deadline = time.monotonic() + 10
        first = None
        while first is None and time.monotonic() < deadline:
            pub.send("emotion.v1.cam0", encode(example_emotion()))
            first = allowed.receive(0.05)
        assert first is not None, "the allowed CURVE client received nothing within 10 s"
        assert first[1] == example_emotion()
        ok, other, none = _pump(pub, [allowed, unknown, plain], 1.5)
        assert ok > 10
        assert other == 0 and none == 0
    finally:
        for s in (allowed, unknown, plain):
            s.close()
        pub.close()


def test_curve_publisher_refuses_bad_key_files(pki: dict[str, Path]) -> None:
    os.chmod(pki["server_sec"], 0o644)
    with pytest.raises(SecurityError, match=r"^security.server_secret_key .*too open"):
        open_publisher(PublisherSettings(endpoint="tcp://127.0.0.1:*"), _curve_settings(pki))
    os.chmod(pki["server_sec"], 0o600)
    os.chmod(pki["clients"], 0o777)
    with pytest.raises(SecurityError, match=r"^security.allowed_clients_dir .*world-writable"):
        server_keys(_curve_settings(pki))


def test_subscriber_curve_flags_must_come_together(pki: dict[str, Path], capsys: pytest.CaptureFixture[str]
                                                   ) -> None:
    rc = cli_main(["subscribe", "--endpoint", "tcp://127.0.0.1:1", "--server-key", str(pki["server_pub"]),
                   "--count", "1", "--timeout", "0.1"])
    assert rc == 2
    assert "--client-key" in capsys.readouterr().err
    os.chmod(pki["ok_sec"], 0o640)
    rc = cli_main(["subscribe", "--endpoint", "tcp://127.0.0.1:1", "--server-key", str(pki["server_pub"]),
                   "--client-key", str(pki["ok_sec"]), "--count", "1", "--timeout", "0.1"])
    assert rc == 2
    assert "client secret key" in capsys.readouterr().err


def _non_loopback_address() -> str | None:
    """A local non-loopback IPv4 address, found without sending anything (None if the host has none).

    A UDP ``connect`` only picks the route and source address; no packet leaves the host."""
    for target in ("10.255.255.255", "192.0.2.1", "198.51.100.1"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((target, 9))
                addr = str(s.getsockname()[0])
        except OSError:
            continue
        if addr != "0.0.0.0" and not addr.startswith("127."):
            return addr
    return None


def test_insecure_remote_is_allowed_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("no non-loopback IPv4 address on this host (the decision itself is tested above)")
    endpoint = f"tcp://{addr}:*"
    assert requires_curve(endpoint)
    with pytest.raises(SecurityError, match=r"^publisher.endpoint"):
        open_publisher(PublisherSettings(endpoint=endpoint), SecuritySettings())
    with caplog.at_level(logging.WARNING, logger="edge_agent.publisher"):
        pub = open_publisher(PublisherSettings(endpoint=endpoint), SecuritySettings(allow_insecure_remote=True))
    try:
        assert not pub.curve and pub.endpoint.startswith(f"tcp://{addr}:")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "NOT encrypted" in warnings[0].getMessage()
        assert addr in warnings[0].getMessage()
    finally:
        pub.close()


# -- privacy: the wire schema cannot carry an image --------------------------------------------------------------

MAX_STRING = 256
BASE64ISH = re.compile(r"[A-Za-z0-9+/=_\-]{64,}")
IMAGE_WORDS = re.compile(r"image|img|crop|jpe?g|png|pixel|frame_data|snapshot|thumb|blob|b64|base64|bytes|raw",
                         re.IGNORECASE)
MAX_FIXED_ARRAY = 16


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return defs[ref.rsplit("/", 1)[1]] if isinstance(ref, str) else node


def _check_schema(node: dict[str, Any], defs: dict[str, Any], path: str) -> None:
    """Every leaf is a number, an integer, a boolean or a short text; arrays of scalars have a fixed, small
    length (boxes, landmarks, size); no binary encodings; no field named like image data."""
    node = _resolve(node, defs)
    assert "contentEncoding" not in node and "contentMediaType" not in node, path
    assert node.get("format") not in ("binary", "base64", "byte"), path
    for sub in node.get("anyOf", []) + node.get("oneOf", []) + node.get("allOf", []):
        _check_schema(sub, defs, path)
    typ = node.get("type")
    if typ is None and any(k in node for k in ("anyOf", "oneOf", "allOf")):
        return  # a union: every branch was checked above
    if typ == "object":
        for name, prop in node.get("properties", {}).items():
            assert not IMAGE_WORDS.search(name), f"{path}.{name}: a field named like image data"
            _check_schema(prop, defs, f"{path}.{name}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):  # dict[str, X]: keys are class or stage names, values checked
            _check_schema(extra, defs, f"{path}.*")
    elif typ == "array":
        items = node.get("prefixItems")
        if items is not None:
            assert node.get("maxItems") == len(items) <= MAX_FIXED_ARRAY, path
            for i, it in enumerate(items):
                _check_schema(it, defs, f"{path}[{i}]")
        else:
            item = _resolve(node["items"], defs)
            assert item.get("type") == "object", f"{path}: a variable-length array of scalars could carry pixels"
            _check_schema(item, defs, f"{path}[]")
    elif "const" not in node and "enum" not in node:
        assert typ in ("number", "integer", "boolean", "null", "string"), f"{path}: unexpected schema type {typ!r}"


@pytest.mark.parametrize("model", get_args(WireMessage), ids=lambda m: m.__name__)
def test_wire_schema_cannot_carry_image_bytes(model: type[BaseModel]) -> None:
    """Every message type on the wire (WireMessage: emotion, status, events, and any added later)."""
    schema = model.model_json_schema(by_alias=True)
    _check_schema(schema, schema.get("$defs", {}), model.__name__)
    assert schema.get("additionalProperties") is False  # extra="forbid": no field can be smuggled in


def assert_no_image_payload(payload: bytes) -> None:
    """A published message body holds only numbers and short texts (used by the CURVE integration test too)."""
    import json

    def walk(v: object, path: str) -> None:
        if isinstance(v, str):
            assert len(v) <= MAX_STRING, f"{path}: a {len(v)}-character string"
            assert not BASE64ISH.search(v), f"{path}: a base64-like run"
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k, f"{path}.<key>")
                walk(x, f"{path}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]")
        else:
            assert v is None or isinstance(v, bool | int | float), f"{path}: {type(v).__name__}"

    walk(json.loads(payload), "$")


def test_example_messages_hold_numbers_and_short_texts_only() -> None:
    examples: list[Any] = []
    for name in dir(messages):
        if name.startswith("example_"):
            made = getattr(messages, name)()
            examples += made if isinstance(made, list) else [made]
    assert len(examples) >= 2
    for msg in examples:
        assert isinstance(msg, get_args(WireMessage))
        assert_no_image_payload(encode(msg))
    with pytest.raises(AssertionError, match="base64"):
        assert_no_image_payload(b'{"label": "' + b"QUJD" * 20 + b'"}')


def test_schema_check_catches_image_carrying_fields() -> None:
    class WithBytes(BaseModel):
        jpeg: bytes

    class WithPixels(BaseModel):
        values: list[int]

    for model, why in ((WithBytes, "named like image data"), (WithPixels, "variable-length array of scalars")):
        schema = model.model_json_schema()
        with pytest.raises(AssertionError, match=why):
            _check_schema(schema, schema.get("$defs", {}), model.__name__)
