"""The PUB socket against a real SUB socket on loopback: framing, non-blocking sends, bind errors."""

from __future__ import annotations

import time

import pytest
import zmq

from edge_agent.messages import decode, encode, example_emotion
from edge_agent.publisher import Publisher, PublisherError
from edge_agent.settings import ConfigError


def _sub(endpoint: str) -> tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"emotion.v1.")
    sock.connect(endpoint)
    return ctx, sock


def _send_until_received(pub: Publisher, sock: zmq.Socket[bytes], topic: str, payload: bytes) -> list[bytes]:
    """PUB/SUB joins asynchronously: resend until the subscription is in place (bounded)."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        pub.send(topic, payload)
        if sock.poll(50):
            return sock.recv_multipart()
    raise AssertionError("no message received within 5 s")


def test_multipart_topic_and_json_reach_a_real_subscriber() -> None:
    pub = Publisher("tcp://127.0.0.1:*", sndhwm=8)
    assert pub.endpoint.startswith("tcp://127.0.0.1:") and not pub.endpoint.endswith("*")
    ctx, sock = _sub(pub.endpoint)
    try:
        msg = example_emotion()
        topic, payload = _send_until_received(pub, sock, "emotion.v1.cam0", encode(msg))
        assert topic == b"emotion.v1.cam0"
        assert decode(topic, payload) == msg
        # the subscriber's prefix filter drops other topics
        pub.send("status.v1.cam0", b"{}")
        assert not sock.poll(200)
        assert pub.sent >= 2 and pub.dropped == 0
    finally:
        sock.close()
        ctx.term()
        pub.close()
    assert pub.closed
    with pytest.raises(PublisherError, match="closed"):
        pub.send("emotion.v1.cam0", b"{}")


def test_send_never_blocks_without_or_with_a_stalled_subscriber() -> None:
    pub = Publisher("tcp://127.0.0.1:*", sndhwm=2)
    ctx, sock = _sub(pub.endpoint)  # connected but never reads
    try:
        _send_until_received(pub, sock, "emotion.v1.cam0", b"x")
        payload = b"y" * 100_000
        t0 = time.monotonic()
        for _ in range(2000):
            pub.send("emotion.v1.cam0", payload)
        elapsed = time.monotonic() - t0
    finally:
        sock.close()
        ctx.term()
        pub.close()
    # 200 MB offered to a subscriber that reads nothing: had any send blocked, this would never finish.
    assert elapsed < 30
    assert pub.sent + pub.dropped >= 2000


def test_bind_error_names_the_endpoint() -> None:
    first = Publisher("tcp://127.0.0.1:*")
    try:
        with pytest.raises(PublisherError, match=first.endpoint.replace(".", r"\.") + r".*in use") as info:
            Publisher(first.endpoint)
        assert isinstance(info.value, ConfigError)  # -> exit code 2 with a one-line message
        assert "\n" not in str(info.value)
    finally:
        first.close()
    with pytest.raises(PublisherError, match=r"tcp://10\.255\.255\.1:5999"):
        Publisher("tcp://10.255.255.1:5999")


def test_close_with_flush_delivers_queued_messages() -> None:
    pub = Publisher("tcp://127.0.0.1:*", sndhwm=100)
    ctx, sock = _sub(pub.endpoint)
    try:
        _send_until_received(pub, sock, "emotion.v1.cam0", b"warm")
        while sock.poll(100):
            sock.recv_multipart()
        for i in range(50):
            pub.send("emotion.v1.cam0", str(i).encode())
        pub.close(flush_s=1.0)
        got = []
        while sock.poll(500):
            got.append(sock.recv_multipart()[1])
    finally:
        sock.close()
        ctx.term()
    assert got == [str(i).encode() for i in range(50)]
