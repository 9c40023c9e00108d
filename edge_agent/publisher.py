"""ZeroMQ PUB socket: ``[topic bytes, JSON bytes]`` multipart messages, never blocking the pipeline.

The socket is bound in the constructor (so a bad or busy endpoint fails at start-up, naming the endpoint) and is
then used by one thread at a time: the pipeline hands it to its publish thread and closes it after joining that
thread. Sends are non-blocking: with a slow or absent subscriber ZeroMQ queues up to ``sndhwm`` messages per
subscriber and then drops *for that subscriber* (inside libzmq, not visible here); a send that ZeroMQ refuses
outright (``EAGAIN``) is dropped and counted in ``dropped``. ``LINGER`` is 0 so closing never waits.

With CURVE (:class:`edge_agent.security.CurveServerKeys`) the socket is a CURVE server and a ZAP authenticator
thread (pyzmq's ``ThreadAuthenticator`` on the publisher's own context) admits only clients whose public key is
in the allowed-clients directory; anyone else completes no handshake and receives nothing.
:func:`open_publisher` applies the endpoint rule of :mod:`edge_agent.security` to the settings.
"""

from __future__ import annotations

import errno
import logging

import zmq
from zmq.auth.thread import ThreadAuthenticator

from edge_agent.security import CurveServerKeys, server_keys, transport_mode
from edge_agent.settings import ConfigError, PublisherSettings, SecuritySettings

log = logging.getLogger(__name__)


class PublisherError(ConfigError):
    """The PUB socket could not be created or bound; the message names the endpoint and the cause."""


def _bind_hint(err: zmq.ZMQError) -> str:
    if err.errno == zmq.EADDRINUSE:
        return "the address is in use (another edge-agent running?); set publisher.endpoint to a free port"
    if err.errno in (zmq.EADDRNOTAVAIL, errno.ENODEV):
        return "that interface/address does not exist on this host; use 127.0.0.1, 0.0.0.0 or a local IP"
    if err.errno == errno.EACCES:
        return "permission denied (a port below 1024, or an ipc:// path you cannot write)"
    if err.errno == zmq.EPROTONOSUPPORT:
        return "unsupported transport; use tcp://HOST:PORT or ipc://PATH"
    return "check publisher.endpoint"


class Publisher:
    """A bound PUB socket. ``send`` returns False (and counts a drop) instead of blocking."""

    def __init__(self, endpoint: str, *, sndhwm: int = 16, context: zmq.Context[zmq.Socket[bytes]] | None = None,
                 curve: CurveServerKeys | None = None) -> None:
        self._own_ctx = context is None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = context if context is not None else zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._sock: zmq.Socket[bytes] | None = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDTIMEO, 0)
        try:
            if curve is not None:
                self._start_curve(self._sock, curve)
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._release(linger_ms=0)
            raise PublisherError(f"publisher.endpoint {endpoint}: cannot bind: {exc.strerror}; {_bind_hint(exc)}"
                                 ) from None
        except BaseException:
            self._release(linger_ms=0)
            raise
        last = self._sock.getsockopt(zmq.LAST_ENDPOINT)
        self.endpoint: str = last.decode() if isinstance(last, bytes) else str(last)
        self.curve = curve is not None
        self.sent = 0
        self.dropped = 0
        log.info("publishing on %s (SNDHWM %d, %s)", self.endpoint, sndhwm,
                 "CURVE encrypted, allowed clients only" if curve is not None else "unencrypted")

    def _start_curve(self, sock: zmq.Socket[bytes], keys: CurveServerKeys) -> None:
        if not zmq.has("curve"):
            raise PublisherError("security.curve: this libzmq was built without CURVE support; install a pyzmq "
                                 "wheel (it bundles libsodium-backed CURVE)")
        self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger(f"{__name__}.auth"))
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(keys.allowed_clients_dir))
        sock.curve_secretkey = keys.secret
        sock.curve_publickey = keys.public
        sock.curve_server = True

    def _release(self, linger_ms: int) -> None:
        if self._sock is not None:
            self._sock.close(linger=linger_ms)
            self._sock = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_ctx:
            self._ctx.term()  # returns once queued messages are sent or the linger period is over

    def send(self, topic: str, payload: bytes) -> bool:
        """Send ``[topic, payload]`` without blocking; False if ZeroMQ could not take it now (counted)."""
        if self._sock is None:
            raise PublisherError("publisher is closed")
        try:
            self._sock.send_multipart([topic.encode("utf-8"), payload], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self, flush_s: float = 0.0) -> None:
        """Close the socket. ``flush_s`` > 0 lets already-queued messages go out for up to that long first
        (this call then waits at most that long)."""
        if self._sock is not None:
            self._release(linger_ms=max(0, round(flush_s * 1000)))

    @property
    def closed(self) -> bool:
        return self._sock is None


def open_publisher(publisher: PublisherSettings, security: SecuritySettings) -> Publisher:
    """Bind the configured endpoint under the security rule: CURVE when security.curve is on, refused (a
    SecurityError naming publisher.endpoint) for a non-loopback endpoint without CURVE unless
    security.allow_insecure_remote, which is logged as a WARNING on every start."""
    mode = transport_mode(publisher.endpoint, security)
    if mode == "insecure_remote":
        log.warning("publisher.endpoint %s is reachable from other hosts and NOT encrypted or authenticated "
                    "(security.allow_insecure_remote = true): anyone on the network can read the stream; "
                    "see docs/security.md to enable CURVE", publisher.endpoint)
    keys = server_keys(security) if mode == "curve" else None
    return Publisher(publisher.endpoint, sndhwm=publisher.sndhwm, curve=keys)
