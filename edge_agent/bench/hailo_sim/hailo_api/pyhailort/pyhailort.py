"""The part of HailoRT's Python InferModel API (4.18-4.23) that edge_agent.backends.hailo uses, on a SimChip.

Only what the backend calls: ``VDevice`` (``create_params``, ``create_infer_model``, ``release``), ``Device``
(``scan``, ``control.identify``), ``InferModel`` (``inputs``/``outputs`` streams with ``set_format_type``,
``configure``), ``ConfiguredInferModel`` (context manager, ``create_bindings``, ``wait_for_async_ready``,
``run_async`` -> ``AsyncInferJob.wait(timeout_ms)``, ``get_async_queue_size``), the completion callback called
as ``callback(completion_info=...)`` from the device's thread, and the exception classes.

A simulated HEF is a JSON file written by :func:`edge_agent.bench.hailo_sim.compile.sim_compile`; its outputs
are produced by :class:`edge_agent.bench.hailo_sim.network.SimNetwork` (ONNX Runtime, replayed from a cache
once seen), and every frame occupies the process's one :class:`~edge_agent.bench.hailo_sim.chip.SimChip` for
the time :func:`configure` set for that HEF's task.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bench.hailo_sim.chip import SimChip
from edge_agent.bench.hailo_sim.hailo_api.pyhailort.enums import (  # noqa: F401 (re-exported as hailo_platform's names)
    FormatOrder,
    FormatType,
    HailoSchedulingAlgorithm,
)
from edge_agent.bench.hailo_sim.network import SimNetwork, load_sim_hef

VERSION = "4.20.0"
DEVICE_ID = "0000:01:00.0"


class HailoRTException(Exception):
    pass


class HailoRTTimeout(HailoRTException):
    pass


@dataclass
class _Config:
    chip: SimChip | None = None
    arch: str = "HAILO8"
    seconds_by_task: dict[str, float] | None = None
    queue_size: int = 4


_CONFIG = _Config()


def configure(chip: SimChip, seconds_by_task: dict[str, float], arch: str = "HAILO8", queue_size: int = 4) -> None:
    """Attach the simulated device: one chip and the chip time per inference for each task (detector, classifier)."""
    _CONFIG.chip, _CONFIG.seconds_by_task, _CONFIG.arch, _CONFIG.queue_size = chip, dict(seconds_by_task), arch, \
        queue_size


def _chip() -> SimChip:
    if _CONFIG.chip is None:
        raise HailoRTException("libhailort failed with error: 74 (HAILO_OUT_OF_PHYSICAL_DEVICES) "
                               "(simulated device not configured: call hailo_sim configure() first)")
    return _CONFIG.chip


class _Params:
    def __init__(self) -> None:
        self.device_count = 1
        self.scheduling_algorithm = HailoSchedulingAlgorithm.ROUND_ROBIN
        self.group_id = "SHARED"
        self.multi_process_service = False


@dataclass(frozen=True)
class _BoardInfo:
    firmware_version: str
    device_architecture: str
    board_name: str


class _Control:
    def identify(self) -> _BoardInfo:
        return _BoardInfo(VERSION, f"DeviceArchitectureTypes.{_CONFIG.arch}", "Simulated Hailo")


class Device:
    def __init__(self, device_id: str | None = None) -> None:
        _chip()
        self.control = _Control()

    @staticmethod
    def scan() -> list[str]:
        return [DEVICE_ID] if _CONFIG.chip is not None else []

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *args: object) -> None:
        return None


class VDevice:
    def __init__(self, params: _Params | None = None, *, device_ids: Sequence[str] | None = None) -> None:
        self._chip = _chip()
        self.params = params or _Params()

    @staticmethod
    def create_params() -> _Params:
        return _Params()

    def create_infer_model(self, hef_source: str, name: str = "") -> InferModel:
        return InferModel(self._chip, Path(hef_source))

    def release(self) -> None:
        return None


class _Stream:
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name = name
        self.shape = shape
        self.format_type = FormatType.AUTO

    def set_format_type(self, format_type: FormatType) -> None:
        self.format_type = format_type


class InferModel:
    def __init__(self, chip: SimChip, hef_path: Path) -> None:
        self._chip = chip
        self.network = SimNetwork(load_sim_hef(hef_path))
        hef = self.network.hef
        self.inputs = [_Stream(hef.input_name, hef.input_shape)]
        self.outputs = [_Stream(o.name, o.shape) for o in hef.outputs]

    def configure(self) -> _ConfigureContext:
        return _ConfigureContext(self)


class _ConfigureContext:
    def __init__(self, model: InferModel) -> None:
        self._model = model

    def __enter__(self) -> ConfiguredInferModel:
        return ConfiguredInferModel(self._model)

    def __exit__(self, *args: object) -> None:
        return None


class _BufferStream:
    def __init__(self, buffer: np.ndarray | None = None) -> None:
        self.buffer = buffer

    def set_buffer(self, buffer: np.ndarray) -> None:
        if not buffer.flags["C_CONTIGUOUS"]:
            raise HailoRTException("libhailort failed with error: 2 (HAILO_INVALID_ARGUMENT) buffer not contiguous")
        self.buffer = buffer

    def get_buffer(self) -> np.ndarray | None:
        return self.buffer


class Bindings:
    def __init__(self, input_name: str, output_buffers: dict[str, np.ndarray]) -> None:
        self._input_name = input_name
        self._input = _BufferStream()
        self._outputs = {k: _BufferStream(v) for k, v in output_buffers.items()}

    def input(self, name: str = "") -> _BufferStream:
        if name and name != self._input_name:
            raise HailoRTException(f"libhailort failed with error: 61 (HAILO_NOT_FOUND) no input {name!r}")
        return self._input

    def output(self, name: str = "") -> _BufferStream:
        return self._outputs[name] if name else next(iter(self._outputs.values()))


@dataclass(frozen=True)
class AsyncInferCompletionInfo:
    exception: BaseException | None


class AsyncInferJob:
    def __init__(self) -> None:
        self._done = threading.Event()

    def _finish(self) -> None:
        self._done.set()

    def wait(self, timeout_ms: int) -> None:
        if not self._done.wait(timeout_ms / 1000.0):
            raise HailoRTTimeout("libhailort failed with error: 4 (HAILO_TIMEOUT)")


class ConfiguredInferModel:
    def __init__(self, model: InferModel) -> None:
        self._model = model
        self._chip = model._chip
        task = model.network.hef.task
        seconds = (_CONFIG.seconds_by_task or {}).get(task)
        if seconds is None:
            raise HailoRTException(f"libhailort failed with error: 2 (HAILO_INVALID_ARGUMENT) no chip time "
                                   f"configured for task {task!r}")
        self._seconds = seconds

    def create_bindings(self, input_buffers: dict[str, np.ndarray] | None = None,
                        output_buffers: dict[str, np.ndarray] | None = None) -> Bindings:
        hef = self._model.network.hef
        outs = output_buffers or {o.name: np.empty(o.shape, np.float32) for o in hef.outputs}
        b = Bindings(hef.input_name, outs)
        if input_buffers:
            b.input().set_buffer(input_buffers[hef.input_name])
        return b

    def get_async_queue_size(self) -> int:
        return _CONFIG.queue_size

    def wait_for_async_ready(self, timeout_ms: int = 1000, frames_count: int = 1) -> None:
        if frames_count > _CONFIG.queue_size:
            raise HailoRTException("libhailort failed with error: 2 (HAILO_INVALID_ARGUMENT) frames_count > queue")

    def run_async(self, bindings: list[Bindings], callback: Callable[..., None] | None = None) -> AsyncInferJob:
        job = AsyncInferJob()
        remaining = [len(bindings)]
        errors: list[BaseException] = []
        lock = threading.Lock()
        network = self._model.network

        def one_done(error: BaseException | None) -> None:
            with lock:
                if error is not None:
                    errors.append(error)
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                if callback is not None:
                    callback(completion_info=AsyncInferCompletionInfo(errors[0] if errors else None))
                job._finish()

        for b in bindings:
            frame = b.input().get_buffer()
            if frame is None:
                raise HailoRTException("libhailort failed with error: 2 (HAILO_INVALID_ARGUMENT) input not set")
            outs: dict[str, Any] = {name: b.output(name).get_buffer() for name in network.output_names}

            def work(frame: np.ndarray = frame, outs: dict[str, Any] = outs) -> None:
                network.infer_into(frame, outs)

            self._chip.submit(network.hef.network_name, self._seconds, work, one_done)
        return job
