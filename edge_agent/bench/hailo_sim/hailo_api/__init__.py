"""A simulated ``hailo_platform`` for the latency benchmark: HailoRT's InferModel API on a SimChip.

Importable only as ``edge_agent.bench.hailo_sim.hailo_api``; the daemon never imports it. The benchmark hands
it to the Hailo backend explicitly (:func:`edge_agent.bench.hailo_sim.run.simulated_hailo_platform`).
"""

from edge_agent.bench.hailo_sim.hailo_api.pyhailort.enums import FormatOrder, FormatType, HailoSchedulingAlgorithm
from edge_agent.bench.hailo_sim.hailo_api.pyhailort.pyhailort import (
    VERSION,
    AsyncInferJob,
    ConfiguredInferModel,
    Device,
    HailoRTException,
    InferModel,
    VDevice,
    configure,
)

__version__ = VERSION

__all__ = [
    "AsyncInferJob",
    "ConfiguredInferModel",
    "Device",
    "FormatOrder",
    "FormatType",
    "HailoRTException",
    "HailoSchedulingAlgorithm",
    "InferModel",
    "VDevice",
    "configure",
]
