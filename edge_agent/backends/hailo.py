"""Hailo-8 backend through HailoRT 4.18-4.23 (``hailo_platform``), InferModel (async) API.

One ``VDevice`` per process, shared by the detector and classifier HEFs under HailoRT's model scheduler
(ROUND_ROBIN, group "SHARED"). Each HEF becomes a :class:`HailoBackend`: a configured infer model kept open
for the backend's life, uint8 NHWC input (normalisation and colour conversion are folded into the HEF),
FLOAT32 outputs (HailoRT dequantises on the host with each output's quant info). ``run`` with N frames (N
faces) binds one buffer set per frame and submits them in one ``run_async`` (split only when N exceeds the
model's async queue), waiting with ``AsyncInferJob.wait(timeout_ms)``. A timeout recreates the configured
model once and retries; a second timeout raises :class:`BackendError`. Nothing here falls back to ONNX.

``hailo_platform`` is imported lazily: the daemon imports this module only when the Hailo backend is asked
for (``backend.kind = "hailo"`` or ``"auto"``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edge_agent.backends.base import BackendError, Tensor, TensorSpec
from edge_agent.manifest import ModelArtifact, verify_session
from edge_agent.settings import HailoSettings

log = logging.getLogger(__name__)

# HailoRT 4.18 introduced the Python InferModel API this backend uses; 5.x is for Hailo-10/15 only.
MIN_VERSION = (4, 18)
MAX_VERSION_EXCLUSIVE = (5, 0)
DRIVER_VERSION_FILE = Path("/sys/module/hailo_pci/version")
GROUP_ID = "SHARED"

INSTALL_HINT = (
    "install HailoRT on Raspberry Pi OS with `sudo apt install hailo-all` (then reboot), "
    "and create the venv with --system-site-packages so it can import hailo_platform"
)

# Which HEF architectures a device architecture (as identify() reports it) can run.
COMPATIBLE_ARCHS: dict[str, frozenset[str]] = {
    "HAILO8": frozenset({"hailo8", "hailo8r", "hailo8l"}),
    "HAILO8L": frozenset({"hailo8l"}),
}

_STATUS_RE = re.compile(r"\b(HAILO_[A-Z0-9_]+)\b")


def _import_hailo() -> ModuleType:
    try:
        import hailo_platform
    except ImportError as exc:
        raise BackendError(f"hailo_platform not importable ({exc}): {INSTALL_HINT}") from None
    module: ModuleType = hailo_platform
    return module


def _pyhailort(hp: ModuleType) -> ModuleType:
    """The module holding HailoRT's exception classes (``hailo_platform.pyhailort.pyhailort``)."""
    import importlib

    return importlib.import_module(f"{hp.__name__}.pyhailort.pyhailort")


def parse_version(text: str) -> tuple[int, int, int]:
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise ValueError(f"not a version: {text!r}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def check_library_version(version: str) -> None:
    """Refuse HailoRT versions outside the Hailo-8 InferModel range, saying which range works."""
    try:
        v = parse_version(version)
    except ValueError:
        raise BackendError(f"HailoRT reports an unreadable version {version!r}; reinstall hailo-all") from None
    if v[:2] < MIN_VERSION:
        raise BackendError(
            f"HailoRT {version} is too old: the Hailo backend needs 4.18 to 4.23 (InferModel API); "
            "upgrade with `sudo apt update && sudo apt full-upgrade` (package hailo-all)"
        )
    if v[:2] >= MAX_VERSION_EXCLUSIVE:
        raise BackendError(
            f"HailoRT {version} is the Hailo-10/15 line and does not drive a Hailo-8; install the 4.x series "
            "(Raspberry Pi OS: `sudo apt install hailo-all`, which pins HailoRT 4.x for Hailo-8/8L)"
        )


def read_driver_version(path: Path | None = None) -> str | None:
    """The hailo_pci kernel module's version (``/sys/module/hailo_pci/version``), or None if not loaded."""
    p = path if path is not None else DRIVER_VERSION_FILE
    try:
        return p.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def status_names(exc: BaseException) -> set[str]:
    """HailoRT status names (``HAILO_...``) mentioned by an exception or its causes."""
    names: set[str] = set()
    seen: BaseException | None = exc
    depth = 0
    while seen is not None and depth < 5:
        names.update(_STATUS_RE.findall(str(seen)))
        seen = seen.__cause__ or seen.__context__
        depth += 1
    return names


def _is_timeout(hp_errors: ModuleType, exc: BaseException) -> bool:
    timeout_cls = getattr(hp_errors, "HailoRTTimeout", None)
    return (timeout_cls is not None and isinstance(exc, timeout_cls)) or "HAILO_TIMEOUT" in status_names(exc)


def _open_error(exc: BaseException, settings: HailoSettings, library: str, hp: ModuleType) -> BackendError:
    """Turn a VDevice creation failure into an actionable message."""
    names = status_names(exc)
    if "HAILO_INVALID_DRIVER_VERSION" in names:
        driver = read_driver_version() or "unknown (hailo_pci not loaded?)"
        return BackendError(
            f"Hailo driver/library version mismatch: hailo_pci driver {driver}, HailoRT library {library}. "
            "They must be identical: reinstall both from one release (`sudo apt install --reinstall hailo-all`, "
            "or the matching hailort-pcie-driver .deb) and reboot"
        )
    if "HAILO_RPC_FAILED" in names:
        return BackendError(
            "backend.hailo.multi_process_service is on but hailort.service is not reachable: "
            "`sudo systemctl enable --now hailort.service`, or set multi_process_service = false "
            f"({exc})"
        )
    if names & {"HAILO_OUT_OF_PHYSICAL_DEVICES", "HAILO_DEVICE_IN_USE"}:
        try:
            found = list(hp.Device.scan())
        except Exception:
            found = ["?"]
        if not found:
            return BackendError(
                "no Hailo device found: check `lspci | grep -i hailo`, `dmesg | grep -i hailo` and that the "
                "hailo_pci driver is loaded (`sudo apt install hailo-all`, reboot)"
            )
        return BackendError(
            f"the Hailo device {settings.device_id or found[0]} is held by another process "
            "(HAILO_OUT_OF_PHYSICAL_DEVICES). Stop the other Hailo user, or share the chip: run "
            "`sudo systemctl enable --now hailort.service` and set backend.hailo.multi_process_service = true "
            "in every process using it"
        )
    return BackendError(f"cannot open the Hailo device ({type(exc).__name__}: {exc}); see /var/log/hailort.log "
                        "or ./hailort.log and `hailortcli fw-control identify`")


class HailoDevice:
    """The process's one HailoRT VDevice; :meth:`load` turns HEF artifacts into backends sharing it."""

    def __init__(self, hp: ModuleType, vdevice: Any, settings: HailoSettings, arch: str | None) -> None:
        self._hp = hp
        self._errors = _pyhailort(hp)
        self._vdevice = vdevice
        self._settings = settings
        self.arch = arch  # device architecture from identify() ("HAILO8", "HAILO8L"), None if unknown
        self.library_version: str = str(hp.__version__)
        self._backends: list[HailoBackend] = []
        self._lock = threading.Lock()

    @classmethod
    def open(cls, settings: HailoSettings) -> HailoDevice:
        hp = _import_hailo()
        library = str(getattr(hp, "__version__", "unknown"))
        check_library_version(library)
        arch = cls._identify(hp, settings, library)
        params = hp.VDevice.create_params()
        params.scheduling_algorithm = hp.HailoSchedulingAlgorithm.ROUND_ROBIN
        params.group_id = GROUP_ID
        params.multi_process_service = settings.multi_process_service
        try:
            ids = [settings.device_id] if settings.device_id else None
            vdevice = hp.VDevice(params, device_ids=ids) if ids else hp.VDevice(params)
        except Exception as exc:
            raise _open_error(exc, settings, library, hp) from exc
        log.info("Hailo VDevice open: scheduler ROUND_ROBIN, group_id %s, multi_process_service %s",
                 GROUP_ID, settings.multi_process_service)
        return cls(hp, vdevice, settings, arch)

    @staticmethod
    def _identify(hp: ModuleType, settings: HailoSettings, library: str) -> str | None:
        """Log library, driver and firmware versions and the device architecture; return the architecture."""
        driver = read_driver_version()
        if settings.multi_process_service:
            # The service owns the device; a direct control connection is not ours to make.
            log.info("HailoRT library %s, hailo_pci driver %s (device identity via hailort.service not queried)",
                     library, driver or "unknown")
            return None
        try:
            with hp.Device(settings.device_id) as dev:
                info = dev.control.identify()
        except Exception as exc:
            if "HAILO_INVALID_DRIVER_VERSION" in status_names(exc):
                raise _open_error(exc, settings, library, hp) from exc
            log.warning("HailoRT library %s, hailo_pci driver %s; could not identify the device: %s",
                        library, driver or "unknown", exc)
            return None
        arch = str(info.device_architecture).split(".")[-1].upper()
        log.info("HailoRT library %s, hailo_pci driver %s, firmware %s, device %s (%s)",
                 library, driver or "unknown", info.firmware_version, str(info.board_name).rstrip("\x00"), arch)
        return arch

    def load(self, artifact: ModelArtifact) -> HailoBackend:
        if self._vdevice is None:
            raise BackendError("the Hailo device is closed")
        backend = HailoBackend(self, artifact)
        with self._lock:
            self._backends.append(backend)
        return backend

    def close(self) -> None:
        with self._lock:
            backends, self._backends = self._backends, []
        for b in backends:
            b.close()
        if self._vdevice is not None:
            try:
                self._vdevice.release()
            finally:
                self._vdevice = None
            log.info("Hailo VDevice released")

    def __enter__(self) -> HailoDevice:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


def probe(settings: HailoSettings | None = None) -> tuple[bool, str]:
    """Can the Hailo backend run here? Opens and releases the VDevice; the reason says which and why."""
    s = settings if settings is not None else HailoSettings()
    try:
        device = HailoDevice.open(s)
    except BackendError as exc:
        return False, str(exc)
    try:
        return True, f"HailoRT {device.library_version}, device {device.arch or 'of unknown architecture'} opened"
    finally:
        device.close()


class HailoBackend:
    """One HEF on the shared VDevice. Thread-safe: calls to :meth:`run` are serialised per backend."""

    kind = "hailo"

    def __init__(self, device: HailoDevice, artifact: ModelArtifact) -> None:
        m = artifact.manifest
        if m.format != "hef" or m.hailo is None:
            raise BackendError(
                f"{m.model_id}: the Hailo backend needs a HEF artifact (format 'hef' with a hailo section), "
                f"got format {m.format!r} at {artifact.directory}; point detector.hailo_model / "
                "classifier.hailo_model at the output of `python -m build.compile_hef`"
            )
        if device.arch is not None and m.hailo.arch not in COMPATIBLE_ARCHS.get(device.arch, frozenset()):
            raise BackendError(self._arch_message(m.model_id, device.arch, m.hailo.arch))
        self._device = device
        self._errors = device._errors
        self._artifact = artifact
        self._timeout_ms = device._settings.timeout_ms
        self._lock = threading.Lock()
        self._cm: Any = None
        self._configured: Any = None
        hp = device._hp
        try:
            self._model = device._vdevice.create_infer_model(str(artifact.path))
            in_streams = list(self._model.inputs)
            out_streams = list(self._model.outputs)
            if len(in_streams) != 1:
                raise BackendError(f"{m.model_id}: expected one HEF input, found {len(in_streams)}")
            for s in in_streams:
                s.set_format_type(hp.FormatType.UINT8)
            for s in out_streams:
                s.set_format_type(hp.FormatType.FLOAT32)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"{m.model_id}: HailoRT cannot load {artifact.path} ({exc})") from exc
        self._in_name = str(in_streams[0].name)
        self._in_shape = tuple(int(d) for d in in_streams[0].shape)
        self._out_shapes = {str(s.name): tuple(int(d) for d in s.shape) for s in out_streams}
        self._inputs = {self._in_name: TensorSpec(self._in_name, (None, *self._in_shape), "uint8")}
        self._outputs = {n: TensorSpec(n, (None, *shape), "float32") for n, shape in self._out_shapes.items()}
        verify_session(m, self._inputs, self._outputs)  # ManifestError on any name/shape/dtype mismatch
        self._configure()
        log.info("%s: HEF for %s (DFC %s) configured; input %s %s uint8, %d outputs float32, async queue %d",
                 m.model_id, m.hailo.arch, m.hailo.dfc_version, self._in_name, list(self._in_shape),
                 len(self._out_shapes), self._queue)

    @staticmethod
    def _arch_message(model_id: str, device_arch: str, hef_arch: str) -> str:
        return (
            f"{model_id}: this HEF was compiled for {hef_arch} but the device is a {device_arch}; recompile "
            f"with `python -m build.compile_hef --arch {device_arch.lower()} ...` (a hailo8l HEF also runs on a "
            "Hailo-8, a hailo8 HEF does not run on a Hailo-8L)"
        )

    def _configure(self) -> None:
        m = self._artifact.manifest
        try:
            self._cm = self._model.configure()
            self._configured = self._cm.__enter__()
            queue_size = getattr(self._configured, "get_async_queue_size", None)
            if queue_size is None:  # not in every 4.x binding: one frame per job is always accepted
                log.info("%s: this HailoRT has no get_async_queue_size(); submitting one frame per job", m.model_id)
            self._queue = max(1, int(queue_size())) if queue_size is not None else 1
        except Exception as exc:
            self._cm = self._configured = None
            if "HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE" in status_names(exc):
                assert m.hailo is not None
                raise BackendError(self._arch_message(m.model_id, self._device.arch or "different device",
                                                      m.hailo.arch)) from exc
            raise BackendError(f"{m.model_id}: HailoRT cannot configure {self._artifact.path} ({exc})") from exc

    def _unconfigure(self) -> None:
        cm, self._cm, self._configured = self._cm, None, None
        if cm is not None:
            try:
                cm.__exit__(None, None, None)
            except Exception as exc:  # tearing down after a failure: report, keep going
                log.warning("%s: error while releasing the configured model: %s", self._artifact.manifest.model_id,
                            exc)

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self._outputs

    def run(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        model_id = self._artifact.manifest.model_id
        if set(feeds) != {self._in_name}:
            raise BackendError(f"{model_id}: feeds {sorted(feeds)} do not match the HEF input {self._in_name!r}")
        x = feeds[self._in_name]
        if x.dtype != np.uint8 or tuple(x.shape[1:]) != self._in_shape:
            raise BackendError(
                f"{model_id}: input must be uint8 (N, {', '.join(map(str, self._in_shape))}) NHWC, got "
                f"{x.dtype} {tuple(x.shape)} (is the manifest's preprocess dtype 'uint8' and layout 'NHWC'?)"
            )
        n = int(x.shape[0])
        outs: dict[str, Tensor] = {name: np.empty((n, *shape), np.float32) for name, shape in self._out_shapes.items()}
        if n == 0:
            return outs
        frames = np.ascontiguousarray(x)
        with self._lock:
            if self._configured is None:
                raise BackendError(f"{model_id}: backend is closed")
            try:
                self._run_all(frames, outs)
            except BackendError:
                raise
            except Exception as exc:
                if not _is_timeout(self._errors, exc):
                    raise BackendError(f"{model_id}: Hailo inference failed ({type(exc).__name__}: {exc})") from exc
                log.warning("%s: Hailo inference timed out after %d ms; recreating the configured model once",
                            model_id, self._timeout_ms)
                self._unconfigure()
                self._configure()
                # Fresh buffers: the abandoned job must not be able to write into what we return.
                outs = {name: np.empty_like(buf) for name, buf in outs.items()}
                try:
                    self._run_all(frames, outs)
                except Exception as exc2:
                    what = "timed out again" if _is_timeout(self._errors, exc2) else f"failed ({exc2})"
                    raise BackendError(
                        f"{model_id}: Hailo inference {what} after recreating the configured model "
                        f"(timeout_ms={self._timeout_ms}); check `hailortcli fw-control identify`, "
                        "`dmesg | grep -i hailo`, the chip temperature, or raise backend.hailo.timeout_ms"
                    ) from exc2
        return outs

    def _run_all(self, frames: np.ndarray, outs: dict[str, Tensor]) -> None:
        n = frames.shape[0]
        for start in range(0, n, self._queue):
            self._run_chunk(frames, outs, start, min(n, start + self._queue))

    def _run_chunk(self, frames: np.ndarray, outs: dict[str, Tensor], start: int, stop: int) -> None:
        cfg = self._configured
        bindings = []
        for i in range(start, stop):
            b = cfg.create_bindings(output_buffers={name: outs[name][i] for name in self._out_shapes})
            b.input(self._in_name).set_buffer(frames[i])
            bindings.append(b)
        errors: list[BaseException] = []

        def on_done(completion_info: Any) -> None:
            if completion_info.exception is not None:
                errors.append(completion_info.exception)

        cfg.wait_for_async_ready(timeout_ms=self._timeout_ms, frames_count=len(bindings))
        job = cfg.run_async(bindings, on_done)
        job.wait(self._timeout_ms)
        if errors:
            raise BackendError(f"{self._artifact.manifest.model_id}: Hailo inference job failed: {errors[0]}")

    def close(self) -> None:
        with self._lock:
            self._unconfigure()
        self._model = None
