"""Test-side helpers shared by several test modules: a real ZeroMQ subscriber, a real sd_notify socket, and
the environment for running the daemon as a subprocess."""
