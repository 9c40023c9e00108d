"""ZeroMQ PUB socket: ``[topic bytes, JSON bytes]`` multipart messages, never blocking the pipeline.

The socket is bound in the constructor (so a bad or busy endpoint fails at start-up, naming the endpoint) and is
then used by one thread at a time: the pipeline hands it to its publish thread and closes it after joining that
thread. Sends are non-blocking: with a slow or absent subscriber ZeroMQ queues up to ``sndhwm`` messages per
subscriber and then drops *for that subscriber* (inside libzmq, not visible here); a send that ZeroMQ refuses
outright (``EAGAIN``) is dropped and counted in ``dropped``. ``LINGER`` is 0 so closing never waits.
"""

from __future__ import annotations

import errno
import logging

import zmq

from edge_agent.settings import ConfigError

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

    def __init__(self, endpoint: str, *, sndhwm: int = 16, context: zmq.Context[zmq.Socket[bytes]] | None = None
                 ) -> None:
        self._own_ctx = context is None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = context if context is not None else zmq.Context()
        self._sock: zmq.Socket[bytes] | None = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDTIMEO, 0)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            self._sock = None
            if self._own_ctx:
                self._ctx.term()
            raise PublisherError(f"publisher.endpoint {endpoint}: cannot bind: {exc.strerror}; {_bind_hint(exc)}"
                                 ) from None
        last = self._sock.getsockopt(zmq.LAST_ENDPOINT)
        self.endpoint: str = last.decode() if isinstance(last, bytes) else str(last)
        self.sent = 0
        self.dropped = 0
        log.info("publishing on %s (SNDHWM %d)", self.endpoint, sndhwm)

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
            self._sock.close(linger=max(0, round(flush_s * 1000)))
            self._sock = None
            if self._own_ctx:
                self._ctx.term()  # returns once queued messages are sent or the linger period is over

    @property
    def closed(self) -> bool:
        return self._sock is None
