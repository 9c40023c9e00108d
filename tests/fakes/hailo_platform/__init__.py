"""Fake ``hailo_platform`` (HailoRT 4.x Python API, Hailo-8 line) for tests on machines without a Hailo device.

Mirrors the names and semantics the edge-agent backend uses (see ``pyhailort/pyhailort.py``); the "chip"
runs the ONNX model a fake HEF points at with ONNX Runtime (``_chip.py``). Configure it with environment
variables so it works in subprocesses too:

- ``FAKE_HAILO_VERSION`` (library version, default 4.20.0), ``FAKE_HAILO_DRIVER_VERSION`` (default = library),
- ``FAKE_HAILO_ARCH`` (HAILO8 | HAILO8L, the device), ``FAKE_HAILO_FAULTS`` (comma list of: device_busy,
  no_device, timeout_once, timeout_always, service_down), ``FAKE_HAILO_QUEUE_SIZE`` (async queue, default 4),
- ``FAKE_HAILO_LOCK`` (lock file standing for /dev/hailo0: one process at a time without the service).
"""

from hailo_platform import _chip
from hailo_platform.pyhailort.pyhailort import (
    HEF,
    AsyncInferJob,
    ConfiguredInferModel,
    Device,
    FormatOrder,
    FormatType,
    HailoRTException,
    HailoSchedulingAlgorithm,
    InferModel,
    VDevice,
)

__version__ = _chip.library_version()

__all__ = [
    "HEF",
    "AsyncInferJob",
    "ConfiguredInferModel",
    "Device",
    "FormatOrder",
    "FormatType",
    "HailoRTException",
    "HailoSchedulingAlgorithm",
    "InferModel",
    "VDevice",
]
