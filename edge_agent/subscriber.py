"""The reference client: a ZeroMQ SUB socket that decodes the wire messages and prints one line per message.

Use it as a library (``Subscriber(endpoint).receive(timeout)`` -> ``(topic, message)``) or through
``edge-agent subscribe``. Lines look like::

    cam0 #812 2 faces | id 3 happy 0.91 ~happy [250,61,373,220] | neutral 0.55 [402,80,470,171] | 23.1 ms
    cam0 #813 1 face | too_small [20,40,38,61] | 22.8 ms
    cam0 event end id 3 | 21.5 s, dominant happy | last happy [250,61,373,220]
    cam0 status running | onnx | in 25.0 fps, out 24.9 fps | published 812, drops 1 | e2e p50 16.0 p95 20.8 ms
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import zmq

from edge_agent.messages import EmotionMessage, EventMessage, FaceMessage, StatusMessage, WireMessage, decode
from edge_agent.security import CurveClientKeys


def connect_endpoint(bind_endpoint: str) -> str:
    """The address a client connects to for a bind endpoint (``tcp://*:5556``/``0.0.0.0`` -> 127.0.0.1)."""
    return re.sub(r"^tcp://(\*|0\.0\.0\.0)(?=:)", "tcp://127.0.0.1", bind_endpoint)


class Subscriber:
    """A connected SUB socket. ``topics`` are ZeroMQ prefix filters ("" = everything).

    With ``curve`` the socket is a CURVE client (``edge_agent.security.client_keys`` loads the keys): the
    daemon's public key authenticates the server and the daemon admits this client only if its public key is in
    the daemon's security.allowed_clients_dir. A refused client receives nothing (ZeroMQ reports no error).
    """

    def __init__(self, endpoint: str, topics: Sequence[str] = ("",), *, rcvhwm: int = 1000,
                 curve: CurveClientKeys | None = None) -> None:
        self.endpoint = connect_endpoint(endpoint)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        if curve is not None:
            self._sock.curve_serverkey = curve.server_public
            self._sock.curve_publickey = curve.public
            self._sock.curve_secretkey = curve.secret
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RECONNECT_IVL, 50)
        for t in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, t.encode("utf-8"))
        try:
            self._sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ValueError(f"cannot connect to {self.endpoint}: {exc.strerror}") from None

    def receive_raw(self, timeout_s: float) -> tuple[str, bytes] | None:
        """The next ``(topic, payload)`` or None if nothing arrived within ``timeout_s``."""
        if not self._sock.poll(max(0, round(timeout_s * 1000))):
            return None
        parts = self._sock.recv_multipart()
        if len(parts) != 2:
            raise ValueError(f"expected a [topic, json] message, got {len(parts)} frames")
        return parts[0].decode("utf-8", "replace"), parts[1]

    def receive(self, timeout_s: float) -> tuple[str, WireMessage] | None:
        """The next decoded message (validated against the schema) or None on timeout."""
        got = self.receive_raw(timeout_s)
        if got is None:
            return None
        topic, payload = got
        return topic, decode(topic, payload)

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


def _box(b: Sequence[float]) -> str:
    return "[" + ",".join(str(round(v)) for v in b) + "]"


def format_emotion(msg: EmotionMessage) -> str:
    n = len(msg.faces)
    parts = [f"{msg.camera_id} #{msg.seq} {n} face{'' if n == 1 else 's'}"]
    parts += [_face(f) for f in msg.faces]
    parts.append(f"{msg.latency_ms:.1f} ms")
    return " | ".join(parts)


def _face(f: FaceMessage) -> str:
    """``id 3 happy 0.91 ~happy [box]``: track id (if confirmed), per-frame label, ~smoothed label (if any);
    a skipped face shows the reason instead of a label."""
    track = f"id {f.track_id} " if f.track_id is not None else ""
    what = f.skipped if f.skipped is not None else f"{f.label} {(f.confidence or 0.0):.2f}"
    smooth = f" ~{f.smoothed_label}" if f.smoothed_label is not None else ""
    return f"{track}{what}{smooth} {_box(f.box)}"


def format_event(msg: EventMessage) -> str:
    """``cam0 event end id 3 | 21.5 s, dominant happy | last happy [box]`` ("-": never classified)."""
    head = f"{msg.camera_id} event {msg.event} id {msg.track_id}"
    label = msg.label or "-"
    if msg.event == "update":
        return f"{head} | {msg.previous_label or '-'} -> {label} {_box(msg.box)}"
    if msg.event == "end":
        dur = f"{msg.duration_s:.1f} s" if msg.duration_s is not None else "-"
        return f"{head} | {dur}, dominant {msg.dominant or '-'} | last {label} {_box(msg.box)}"
    return f"{head} | {label} {_box(msg.box)}"


def format_status(msg: StatusMessage) -> str:
    e2e = msg.latency_ms.get("end_to_end")
    lat = f"e2e p50 {e2e.p50:.1f} p95 {e2e.p95:.1f} ms" if e2e else "e2e -"
    src = f"source {msg.source.state}" + (f" ({msg.source.reconnects} reconnects)" if msg.source.reconnects else "")
    return (f"{msg.camera_id} status {msg.state} | {msg.backend} | in {msg.fps_in:.1f} fps, out {msg.fps_out:.1f} fps"
            f" | published {msg.frames_published}, drops {msg.drops} | {lat} | {src}")


def format_message(msg: WireMessage) -> str:
    if isinstance(msg, EmotionMessage):
        return format_emotion(msg)
    if isinstance(msg, EventMessage):
        return format_event(msg)
    return format_status(msg)
