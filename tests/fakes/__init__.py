"""Test doubles at hardware boundaries only (the Hailo runtime). Never imported by the daemon."""
