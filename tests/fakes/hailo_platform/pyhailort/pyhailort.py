"""Fake of ``hailo_platform.pyhailort.pyhailort`` (HailoRT 4.18-4.23): the InferModel (async) API surface.

Names, call signatures and error semantics follow hailo-ai/hailort
``hailort/libhailort/bindings/python/platform/hailo_platform/pyhailort/pyhailort.py``:

- ``VDevice(params=None, *, device_ids=None)``, ``VDevice.create_params()`` (attributes ``device_count``,
  ``scheduling_algorithm``, ``group_id``, ``multi_process_service``), context manager / ``release()``,
  ``create_infer_model(hef_source, name="")``, ``get_physical_devices_ids()``;
- ``InferModel.input(name="")`` / ``output(name="")`` / ``inputs`` / ``outputs`` / ``input_names`` /
  ``output_names`` / ``set_batch_size`` / ``configure()``; ``InferModel.InferStream`` with ``name``, ``shape``
  (NHWC (H, W, C) per frame, (C,) for NC outputs), ``format``, ``set_format_type``, ``quant_infos``;
- ``ConfiguredInferModel`` (context manager) with ``create_bindings(input_buffers=None, output_buffers=None)``,
  ``wait_for_async_ready(timeout_ms=1000, frames_count=1)``, ``run(bindings, timeout)``,
  ``run_async(bindings, callback=None)`` -> ``AsyncInferJob`` whose ``wait(timeout_ms)`` raises
  ``HailoRTTimeout``; the callback is called as ``callback(completion_info=AsyncInferCompletionInfo)``;
  ``get_async_queue_size()``, ``shutdown()``, ``activate()`` (invalid while the scheduler is on);
- ``Bindings.input(name="")`` / ``output(name="")`` -> stream with ``set_buffer`` (C-contiguity enforced) and
  ``get_buffer()``;
- errors from a libhailort status become ``HailoRTException("libhailort failed with error: N (NAME)")``
  except the ones pyhailort maps to subclasses (HAILO_TIMEOUT -> HailoRTTimeout, ...);
- ``Device.scan()``, ``Device(device_id)`` with ``control.identify()`` -> BoardInformation
  (``firmware_version``, ``device_architecture``, ``board_name``, ``product_name``, ``serial_number``).

One VDevice per process unless ``multi_process_service`` is on (then HailoRT's service arbitrates and
VDevices of the same ``group_id`` share the chip); across processes a lock file stands for /dev/hailo0.
"""

from __future__ import annotations

import fcntl
import gc
import os
import threading
from collections.abc import Callable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
from hailo_platform import _chip

from edge_agent.bench.hailo_sim.hailo_api.pyhailort.enums import FormatOrder, FormatType, HailoSchedulingAlgorithm

STATUS = {
    "HAILO_INVALID_ARGUMENT": 2,
    "HAILO_OPEN_FILE_FAILURE": 13,
    "HAILO_TIMEOUT": 4,
    "HAILO_INVALID_OPERATION": 6,
    "HAILO_NOT_FOUND": 61,
    "HAILO_QUEUE_IS_FULL": 62,
    "HAILO_STREAM_ABORT": 63,
    "HAILO_INVALID_HEF": 26,
    "HAILO_DEVICE_IN_USE": 73,
    "HAILO_OUT_OF_PHYSICAL_DEVICES": 74,
    "HAILO_INVALID_DEVICE_ARCHITECTURE": 75,
    "HAILO_INVALID_DRIVER_VERSION": 76,
    "HAILO_RPC_FAILED": 77,
    "HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE": 93,
}


class HailoRTException(Exception):
    pass


class HailoRTTimeout(HailoRTException):
    pass


class HailoRTStreamAborted(HailoRTException):
    pass


class HailoRTInvalidOperationException(HailoRTException):
    pass


class HailoRTInvalidArgumentException(HailoRTException):
    pass


class HailoRTNotFoundException(HailoRTException):
    pass


class HailoRTInvalidHEFException(HailoRTException):
    pass


def _status_error(name: str) -> HailoRTException:
    """What pyhailort's ExceptionWrapper.create_exception_from_status raises for a libhailort status."""
    code = STATUS[name]
    special: dict[str, HailoRTException] = {
        "HAILO_TIMEOUT": HailoRTTimeout("Received a timeout - hailort has failed because a timeout had occurred"),
        "HAILO_STREAM_ABORT": HailoRTStreamAborted("Stream was aborted"),
        "HAILO_INVALID_OPERATION": HailoRTInvalidOperationException(
            "Invalid operation. See hailort.log for more information"),
        "HAILO_INVALID_ARGUMENT": HailoRTInvalidArgumentException(
            "Invalid argument. See hailort.log for more information"),
        "HAILO_NOT_FOUND": HailoRTNotFoundException("Item not found. See hailort.log for more information"),
        "HAILO_INVALID_HEF": HailoRTInvalidHEFException("Invalid HEF. See hailort.log for more information"),
    }
    return special.get(name, HailoRTException(f"libhailort failed with error: {code} ({name})"))


_DTYPES = {FormatType.UINT8: np.dtype(np.uint8), FormatType.UINT16: np.dtype(np.uint16),
           FormatType.FLOAT32: np.dtype(np.float32)}

HAILO_UNIQUE_VDEVICE_GROUP_ID = "UNIQUE"


class DeviceArchitectureTypes(IntEnum):
    HAILO8_A0 = 0
    HAILO8 = 1
    HAILO8L = 2

    def __str__(self) -> str:
        return self.name


class HailoFirmwareVersion:
    def __init__(self, major: int, minor: int, revision: int) -> None:
        self.major, self.minor, self.revision = major, minor, revision

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.revision} (release,app)"


class BoardInformation:
    def __init__(self, arch: str, fw: str) -> None:
        major, minor, rev = (int(p) for p in fw.split(".")[:3])
        self.protocol_version = 2
        self.firmware_version = HailoFirmwareVersion(major, minor, rev)
        self.logger_version = 0
        self.board_name = "Hailo-8" if arch == "HAILO8" else "Hailo-8L"
        self.is_release = True
        self.device_architecture = DeviceArchitectureTypes[arch]
        self.serial_number = "HLLWM2B233500000"
        self.part_number = "HM218B1C2LAE"
        self.product_name = "HAILO-8 AI ACC M.2 M KEY MODULE EXT TEMP"


class QuantInfo:
    def __init__(self, scale: float, zp: float) -> None:
        self.qp_scale = scale
        self.qp_zp = zp
        self.limvals_min = (0 - zp) * scale
        self.limvals_max = (255 - zp) * scale


class _Format:
    def __init__(self, type_: FormatType, order: FormatOrder) -> None:
        self.type = type_
        self.order = order


# ---------------------------------------------------------------------------------------------- devices

_state_lock = threading.RLock()  # re-entrant: VDevice.__del__ (GC) may run while this thread holds it
_open_vdevices: dict[str, int] = {}  # group_id -> open count in this process
_lock_fd: list[int] = []  # the flock on the fake /dev/hailo0 held by this process


def _check_driver() -> None:
    if _chip.driver_version() != _chip.library_version():
        raise _status_error("HAILO_INVALID_DRIVER_VERSION")


class Control:
    def __init__(self, device: Device) -> None:
        self._device = device

    def identify(self) -> BoardInformation:
        return BoardInformation(_chip.device_arch(), _chip.driver_version())


class Device:
    """A physical device (control use; inference goes through VDevice)."""

    @classmethod
    def scan(cls) -> list[str]:
        return [] if "no_device" in _chip.faults() else [_chip.DEVICE_ID]

    def __init__(self, device_id: str | None = None) -> None:
        ids = Device.scan()
        if not ids:
            raise HailoRTException("HailoRT device not found in the system")
        if device_id is not None and device_id not in ids:
            raise _status_error("HAILO_INVALID_ARGUMENT")
        _check_driver()
        self._device_id = device_id or ids[0]
        self._control_object = Control(self)
        self._released = False

    @property
    def device_id(self) -> str:
        return self._device_id

    @property
    def control(self) -> Control:
        return self._control_object

    def release(self) -> None:
        self._released = True

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *args: object) -> bool:
        self.release()
        return False


class VDeviceParams:
    def __init__(self) -> None:
        self.device_count = 1
        self.scheduling_algorithm = HailoSchedulingAlgorithm.ROUND_ROBIN
        self.group_id = HAILO_UNIQUE_VDEVICE_GROUP_ID
        self.multi_process_service = False


class VDevice:
    """Hailo virtual device representation."""

    def __init__(self, params: VDeviceParams | None = None, *, device_ids: Sequence[str] | None = None) -> None:
        gc.collect()  # as pyhailort does: unreferenced VDevices release the device before a new one opens
        self._vdevice: object | None = None
        self._params = params if params is not None else VDevice.create_params()
        self._creation_pid = os.getpid()
        self._open(list(device_ids or []))

    @staticmethod
    def create_params() -> VDeviceParams:
        return VDeviceParams()

    def _open(self, device_ids: list[str]) -> None:
        p = self._params
        faults = _chip.faults()
        if p.multi_process_service and "service_down" in faults:
            raise _status_error("HAILO_RPC_FAILED")
        if not p.multi_process_service:
            _check_driver()
        available = Device.scan()
        if device_ids and any(d not in available for d in device_ids):
            raise _status_error("HAILO_INVALID_ARGUMENT")
        if not available:
            raise _status_error("HAILO_OUT_OF_PHYSICAL_DEVICES")
        if "device_busy" in faults and not p.multi_process_service:
            raise _status_error("HAILO_OUT_OF_PHYSICAL_DEVICES")
        with _state_lock:
            if p.multi_process_service:
                # The service shares the chip between VDevices of one group; other groups wait their turn.
                _open_vdevices[p.group_id] = _open_vdevices.get(p.group_id, 0) + 1
            else:
                if sum(_open_vdevices.values()):
                    raise _status_error("HAILO_OUT_OF_PHYSICAL_DEVICES")
                fd = os.open(_chip.lock_path(), os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise _status_error("HAILO_OUT_OF_PHYSICAL_DEVICES") from None
                _lock_fd.append(fd)
                _open_vdevices[p.group_id] = 1
        self._vdevice = object()
        self._device_ids = device_ids or available

    def release(self) -> None:
        if self._vdevice is None:
            return
        self._vdevice = None
        with _state_lock:
            g = self._params.group_id
            _open_vdevices[g] = _open_vdevices.get(g, 1) - 1
            if _open_vdevices[g] <= 0:
                _open_vdevices.pop(g, None)
            if not self._params.multi_process_service:
                while _lock_fd:
                    fd = _lock_fd.pop()
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)

    def __enter__(self) -> VDevice:
        return self

    def __exit__(self, *args: object) -> bool:
        self.release()
        return False

    def __del__(self) -> None:
        self.release()

    def get_physical_devices_ids(self) -> list[str]:
        return list(self._device_ids)

    def get_physical_devices(self) -> list[Device]:
        return [Device(d) for d in self.get_physical_devices_ids()]

    def create_infer_model(self, hef_source: str | bytes, name: str = "") -> InferModel:
        if os.getpid() != self._creation_pid:
            raise HailoRTException("InferModel can be created only from the process VDevice was created in.")
        if self._vdevice is None:
            raise HailoRTInvalidOperationException("VDevice was released")
        if not isinstance(hef_source, str):
            raise ValueError("the fake supports HEF paths (str) only")
        if not Path(hef_source).is_file():
            raise _status_error("HAILO_OPEN_FILE_FAILURE")
        try:
            hef = _chip.parse_hef(Path(hef_source))
        except _chip.HefParseError:
            raise _status_error("HAILO_INVALID_HEF") from None
        return InferModel(self, hef)


class HEF:
    """Just enough of the HEF class: network names, vstream infos."""

    def __init__(self, hef_source: str) -> None:
        try:
            self._hef = _chip.parse_hef(Path(hef_source))
        except _chip.HefParseError:
            raise _status_error("HAILO_INVALID_HEF") from None

    def get_network_group_names(self) -> list[str]:
        return [self._hef.network_name]


# ------------------------------------------------------------------------------------------ infer model


class InferModel:
    class InferStream:
        def __init__(self, info: _chip.StreamInfo, fmt: _Format) -> None:
            self._info = info
            self._format = fmt

        @property
        def name(self) -> str:
            return self._info.name

        @property
        def shape(self) -> tuple[int, ...]:
            return tuple(self._info.shape)

        @property
        def format(self) -> _Format:
            return self._format

        def set_format_type(self, type: FormatType) -> None:
            self._format.type = FormatType(type)

        def set_format_order(self, order: FormatOrder) -> None:
            self._format.order = FormatOrder(order)

        @property
        def quant_infos(self) -> list[QuantInfo]:
            return [QuantInfo(self._info.quant_scale, self._info.quant_zp)]

        @property
        def is_nms(self) -> bool:
            return False

    def __init__(self, vdevice: VDevice, hef: _chip.FakeHefFile) -> None:
        self._vdevice = vdevice
        self._hef = hef
        # HailoRT defaults: device-native formats (uint8 in, uint8 quantised out).
        self._in = InferModel.InferStream(hef.input, _Format(FormatType.UINT8, FormatOrder.NHWC))
        self._outs = {
            o.name: InferModel.InferStream(
                o, _Format(FormatType.UINT8, FormatOrder.NHWC if len(o.shape) == 3 else FormatOrder.NC))
            for o in hef.outputs
        }
        self._batch_size = 0

    @property
    def hef(self) -> HEF:
        return HEF(str(self._hef.path))

    def set_batch_size(self, batch_size: int) -> None:
        self._batch_size = batch_size

    @property
    def input_names(self) -> list[str]:
        return [self._in.name]

    @property
    def output_names(self) -> list[str]:
        return list(self._outs)

    @property
    def inputs(self) -> list[InferModel.InferStream]:
        return [self._in]

    @property
    def outputs(self) -> list[InferModel.InferStream]:
        return list(self._outs.values())

    def input(self, name: str = "") -> InferModel.InferStream:
        if name in ("", self._in.name):
            return self._in
        raise _status_error("HAILO_NOT_FOUND")

    def output(self, name: str = "") -> InferModel.InferStream:
        if name == "" and len(self._outs) == 1:
            return next(iter(self._outs.values()))
        if name not in self._outs:
            raise _status_error("HAILO_NOT_FOUND")
        return self._outs[name]

    def configure(self) -> ConfiguredInferModel:
        if self._vdevice._vdevice is None:
            raise HailoRTInvalidOperationException("VDevice was released")
        device_arch = _chip.device_arch()
        if self._hef.arch not in _chip.COMPATIBLE[device_arch]:
            # libhailort logs "HEF format is not compatible with device. Device arch: X, HEF arch: Y".
            raise _status_error("HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE")
        return ConfiguredInferModel(self)


class AsyncInferCompletionInfo:
    def __init__(self, exception: BaseException | None) -> None:
        self._exception = exception

    @property
    def exception(self) -> BaseException | None:
        return self._exception


class AsyncInferJob:
    def __init__(self, done: threading.Event) -> None:
        self._done = done

    def wait(self, timeout_ms: int) -> None:
        if not self._done.wait(timeout_ms / 1000.0):
            raise _status_error("HAILO_TIMEOUT")


# Per-process count of jobs started, so "timeout_once" stalls exactly the first one.
_jobs_started = [0]


class ConfiguredInferModel:
    class Bindings:
        class InferStream:
            def __init__(self, name: str, shape: tuple[int, ...], fmt: _Format) -> None:
                self._name = name
                self._shape = shape
                self._format = fmt
                self._buffer: np.ndarray | None = None

            def set_buffer(self, buffer: np.ndarray) -> None:
                if not buffer.flags.c_contiguous:
                    raise HailoRTException("Buffer must be C_CONTIGUOUS")
                want = _DTYPES[self._format.type]
                frame_size = int(np.prod(self._shape)) * want.itemsize
                if buffer.nbytes != frame_size:
                    # libhailort: "Input/Output buffer size mismatch" -> HAILO_INVALID_ARGUMENT
                    raise _status_error("HAILO_INVALID_ARGUMENT")
                self._buffer = buffer

            def get_buffer(self, tf_format: bool | None = False) -> np.ndarray | None:
                return self._buffer

        def __init__(self, model: ConfiguredInferModel) -> None:
            im = model._infer_model
            self._inputs = {s.name: self.InferStream(s.name, s.shape, _Format(s.format.type, s.format.order))
                            for s in im.inputs}
            self._outputs = {s.name: self.InferStream(s.name, s.shape, _Format(s.format.type, s.format.order))
                             for s in im.outputs}

        def input(self, name: str = "") -> ConfiguredInferModel.Bindings.InferStream:
            if name == "" and len(self._inputs) == 1:
                return next(iter(self._inputs.values()))
            if name not in self._inputs:
                raise _status_error("HAILO_NOT_FOUND")
            return self._inputs[name]

        def output(self, name: str = "") -> ConfiguredInferModel.Bindings.InferStream:
            if name == "" and len(self._outputs) == 1:
                return next(iter(self._outputs.values()))
            if name not in self._outputs:
                raise _status_error("HAILO_NOT_FOUND")
            return self._outputs[name]

    def __init__(self, infer_model: InferModel) -> None:
        self._infer_model = infer_model
        self._network: _chip.Network | None = _chip.Network(infer_model._hef)
        self._scheduler = infer_model._vdevice._params.scheduling_algorithm != HailoSchedulingAlgorithm.NONE
        self._pending: list[threading.Event] = []
        self._lock = threading.Lock()

    def __enter__(self) -> ConfiguredInferModel:
        return self

    def __exit__(self, *args: object) -> None:
        self.shutdown()

    def activate(self) -> None:
        if self._scheduler:
            raise _status_error("HAILO_INVALID_OPERATION")

    def deactivate(self) -> None:
        if self._scheduler:
            raise _status_error("HAILO_INVALID_OPERATION")

    def create_bindings(self, input_buffers: dict[str, np.ndarray] | None = None,
                        output_buffers: dict[str, np.ndarray] | None = None) -> ConfiguredInferModel.Bindings:
        if self._network is None:
            raise HailoRTInvalidOperationException("configured infer model was shut down")
        b = ConfiguredInferModel.Bindings(self)
        for name, buf in (input_buffers or {}).items():
            b.input(name).set_buffer(buf)
        for name, buf in (output_buffers or {}).items():
            b.output(name).set_buffer(buf)
        return b

    def get_async_queue_size(self) -> int:
        return _chip.queue_size()

    def wait_for_async_ready(self, timeout_ms: int = 1000, frames_count: int = 1) -> None:
        if frames_count > self.get_async_queue_size():
            raise _status_error("HAILO_TIMEOUT")

    def run(self, bindings: list[ConfiguredInferModel.Bindings], timeout: int) -> None:
        self.run_async(bindings).wait(timeout)

    def run_async(self, bindings: list[ConfiguredInferModel.Bindings],
                  callback: Callable[..., Any] | None = None) -> AsyncInferJob:
        if self._network is None:
            raise HailoRTInvalidOperationException("configured infer model was shut down")
        if not self._scheduler:
            # Without the model scheduler a network group must be activated first (we never do that).
            raise _status_error("HAILO_INVALID_OPERATION")
        if len(bindings) > self.get_async_queue_size():
            raise _status_error("HAILO_QUEUE_IS_FULL")
        for b in bindings:
            for s in (*b._inputs.values(), *b._outputs.values()):
                if s._buffer is None:
                    raise _status_error("HAILO_INVALID_OPERATION")
        faults = _chip.faults()
        _jobs_started[0] += 1
        stall = "timeout_always" in faults or ("timeout_once" in faults and _jobs_started[0] == 1)
        done = threading.Event()
        network = self._network
        if stall:
            # The job never completes: the chip stopped answering. shutdown() aborts it.
            with self._lock:
                self._pending.append(done)
            return AsyncInferJob(done)

        def work() -> None:
            error: BaseException | None = None
            try:
                for b in bindings:
                    (inp,) = b._inputs.values()
                    frame = np.asarray(inp._buffer).reshape(inp._shape)
                    q = network.infer(frame)
                    for name, out in b._outputs.items():
                        buf = out._buffer
                        assert buf is not None
                        if out._format.type == FormatType.FLOAT32:
                            info = self._infer_model._outs[name]._info
                            buf.reshape(-1)[:] = ((q[name].astype(np.float32) - info.quant_zp)
                                                  * info.quant_scale).reshape(-1)
                        else:
                            buf.reshape(-1)[:] = q[name].reshape(-1)
            except Exception as exc:  # reported through completion_info, as the real callback does
                error = HailoRTException(f"fake chip failed: {exc}")
            if callback is not None:
                callback(completion_info=AsyncInferCompletionInfo(error))
            done.set()

        threading.Thread(target=work, name="fake-hailo-job", daemon=True).start()
        return AsyncInferJob(done)

    def shutdown(self) -> None:
        self._network = None
        with self._lock:
            self._pending.clear()
