"""edge-agent: real-time facial-expression daemon (capture -> detect -> classify -> ZeroMQ)."""

__version__ = "0.1.0"
