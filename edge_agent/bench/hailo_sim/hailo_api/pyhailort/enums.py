"""The HailoRT enums the backend uses, with the values of ``hailort.h`` (``hailo_scheduling_algorithm_t``,
``hailo_format_type_t``, ``hailo_format_order_t``). Shared by the latency simulator and the test fake
(tests/fakes/hailo_platform), so the two stand-ins cannot drift apart; the backend itself uses the names only."""

from __future__ import annotations

from enum import IntEnum


class HailoSchedulingAlgorithm(IntEnum):
    NONE = 0
    ROUND_ROBIN = 1


class FormatType(IntEnum):
    AUTO = 0
    UINT8 = 1
    UINT16 = 2
    FLOAT32 = 3


class FormatOrder(IntEnum):
    AUTO = 0
    NHWC = 1
    NHCW = 2
    NC = 6
    NCHW = 11
