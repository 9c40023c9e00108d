"""A latency model of the Raspberry Pi 5 + Hailo-8/8L path ("Hailo on paper"). Pure arithmetic, no I/O.

Three inputs, each from a stated source:

* **host work per frame** (capture decode, preprocess to uint8 NHWC, dequantising the raw heads, decode + NMS,
  per-face crops, publish): measured on this machine with the daemon's real functions
  (:mod:`edge_agent.bench.hailo_host`) and multiplied by :data:`PI5_HOST_SCALE` for the Pi 5's Cortex-A76;
* **chip time** per inference: Hailo's published single-stream throughput (``FPS (Batch Size=1)``) for the
  nearest network in hailo_model_zoo's tables (:data:`PUBLISHED`), scaled by operations where ours differ;
* **PCIe transfer**: bytes per inference over the Pi 5's external PCIe x1 link (:data:`PCIE_LINKS`).

:func:`project` combines them into fps, capture->publish latency and the device's busy share for a frame
with N faces under three pipeline layouts (:data:`LAYOUTS`). Everything is a projection: no Hailo device was
measured. docs/hailo.md ("Projected performance") explains each assumption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Layout = Literal["sequential", "two_stage", "overlapped"]
LAYOUTS: Final[tuple[Layout, ...]] = ("sequential", "two_stage", "overlapped")

# Host time on a Pi 5 (Cortex-A76 @ 2.4 GHz) per unit of host time measured on this project's x86 VM (AMD EPYC,
# ~3 GHz boost class). Single-thread integer/vector throughput of an A76 @ 2.4 GHz is about half of a current
# EPYC core (clock 2.4 vs ~3.5 GHz, narrower core), and the Pi's LPDDR4X gives a fraction of the VM's memory
# bandwidth for the frame-sized copies (resize, letterbox, dequantise); 2.5x is the assumption, 2x..3x the band.
PI5_HOST_SCALE: Final = 2.5
PI5_HOST_SCALE_BAND: Final = (2.0, 3.0)


@dataclass(frozen=True)
class PublishedFigure:
    """One row of hailo_model_zoo's public model tables."""

    network: str
    arch: Literal["hailo8", "hailo8l"]
    fps_batch1: float  # "FPS (Batch Size=1)"
    gops: float  # "OPS (G)" (2 x GMAC)
    input_hwc: tuple[int, int, int]
    source: str  # table file and compiler version it was compiled with

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 / self.fps_batch1


_FD8 = "hailo_model_zoo docs/public_models/HAILO8/HAILO8_face_detection.rst (DFC v3.28.0, zoo v2.12.0 HEFs)"
_FD8L = "hailo_model_zoo docs/public_models/HAILO8L/HAILO8L_face_detection.rst (DFC v5.0.0, zoo v2.15.0 HEFs)"
_CL8 = "hailo_model_zoo docs/public_models/HAILO8/HAILO8_classification.rst (zoo v2.11.0 HEFs)"
_CL8L = "hailo_model_zoo docs/public_models/HAILO8L/HAILO8L_classification.rst (zoo v2.13.0 HEFs)"

PUBLISHED: Final[dict[tuple[str, str], PublishedFigure]] = {
    (f.network, f.arch): f
    for f in (
        PublishedFigure("scrfd_500m", "hailo8", 831.0, 1.5, (640, 640, 3), _FD8),
        PublishedFigure("scrfd_2.5g", "hailo8", 733.0, 6.88, (640, 640, 3), _FD8),
        PublishedFigure("retinaface_mobilenet_v1", "hailo8", 104.0, 25.14, (736, 1280, 3), _FD8),
        PublishedFigure("scrfd_500m", "hailo8l", 588.0, 1.5, (640, 640, 3), _FD8L),
        PublishedFigure("scrfd_2.5g", "hailo8l", 200.0, 6.88, (640, 640, 3), _FD8L),
        PublishedFigure("retinaface_mobilenet_v1", "hailo8l", 75.0, 25.14, (736, 1280, 3), _FD8L),
        PublishedFigure("mobilenet_v3_large_minimalistic", "hailo8", 3518.0, 0.42, (224, 224, 3), _CL8),
        PublishedFigure("mobilenet_v3_large_minimalistic", "hailo8l", 348.0, 0.42, (224, 224, 3), _CL8L),
    )
}

# Our networks (GMAC in thop's convention, from the model manifests / build.flops).
DETECTOR_GMAC_640X384: Final = 0.643  # acwface-deploy at its fixed 640x384 input (manifest metrics.macs_640x384)
CLASSIFIER_GMAC_160: Final = 0.030  # MobileNetV3-Small: 0.058 GMAC at 224x224 x (160/224)^2


def chip_ms(reference: PublishedFigure, gmac: float, *, floor_at_reference: bool) -> float:
    """Chip time per inference for a network of ``gmac`` from a published row, scaled by operations.

    Scaling is linear in operations (the row's ms per GOP times ours). Small networks do not get faster in
    proportion (fixed per-inference cost), so with ``floor_at_reference`` a network smaller than the reference is
    given the reference's own time, never less.
    """
    if gmac <= 0:
        raise ValueError(f"gmac must be > 0, got {gmac}")
    scaled = reference.ms_per_frame * (2.0 * gmac) / reference.gops
    return max(scaled, reference.ms_per_frame) if floor_at_reference else scaled


@dataclass(frozen=True)
class PcieLink:
    name: str
    raw_bytes_per_s: float  # after line coding
    efficiency: float  # payload share after TLP/DLLP overhead (128-byte max payload on the Pi's root port)

    @property
    def bytes_per_s(self) -> float:
        return self.raw_bytes_per_s * self.efficiency


# PCIe 2.0: 5 GT/s, 8b/10b -> 500 MB/s per lane; 3.0: 8 GT/s, 128b/130b -> 984.6 MB/s per lane. The Pi 5's
# external connector is one lane, Gen 2 by default, Gen 3 with dtparam=pciex1_gen=3 (not certified).
PCIE_LINKS: Final[dict[str, PcieLink]] = {
    "gen2x1": PcieLink("PCIe 2.0 x1", 500e6, 0.80),
    "gen3x1": PcieLink("PCIe 3.0 x1", 8e9 * 128 / 130 / 8, 0.80),
}


def transfer_ms(n_bytes: int, link: PcieLink) -> float:
    if n_bytes < 0:
        raise ValueError(f"n_bytes must be >= 0, got {n_bytes}")
    return 1000.0 * n_bytes / link.bytes_per_s


def detector_bytes(width: int = 640, height: int = 384, anchors_per_cell: int = 2,
                   strides: tuple[int, ...] = (8, 16, 32)) -> tuple[int, int]:
    """(input, output) bytes of one detector inference: uint8 NHWC frame in, uint8 raw heads out
    (2 class + 4 box + 10 landmark values per anchor; HailoRT dequantises to float32 on the host)."""
    cells = sum((width // s) * (height // s) for s in strides)
    return width * height * 3, cells * anchors_per_cell * 16


def classifier_bytes(side: int = 160, classes: int = 7) -> tuple[int, int]:
    """(input, output) bytes of one classifier inference (per face)."""
    return side * side * 3, classes


@dataclass(frozen=True)
class HostCosts:
    """Host milliseconds per frame on the target CPU (already scaled). ``*_per_face`` scale with faces."""

    capture: float  # read + decode one frame (capture thread)
    preprocess: float  # letterbox to the HEF's uint8 NHWC input
    dequantize: float  # raw heads uint8 -> float32 (HailoRT, on the calling thread)
    decode: float  # merge heads, priors, decode, NMS
    crop_per_face: float  # warp one 160x160 crop
    classify_post_per_face: float  # softmax / probabilities per face
    publish_base: float  # tracker + message + JSON + send, frame part
    publish_per_face: float  # ... per face

    def scaled(self, factor: float) -> HostCosts:
        if factor <= 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        return HostCosts(*(v * factor for v in (
            self.capture, self.preprocess, self.dequantize, self.decode, self.crop_per_face,
            self.classify_post_per_face, self.publish_base, self.publish_per_face)))


@dataclass(frozen=True)
class DeviceCosts:
    """Device milliseconds per inference: chip compute and PCIe transfer (in + out)."""

    detector_chip: float
    detector_transfer: float
    classifier_chip: float  # per face
    classifier_transfer: float  # per face
    switch: float = 0.0  # scheduler switch between the two network groups, per switch (not published; 0 = ignored)

    def detector(self) -> float:
        """One detector inference as the device is occupied by it (one frame in flight: transfer then compute)."""
        return self.detector_chip + self.detector_transfer

    def classifier(self, faces: int) -> float:
        return faces * (self.classifier_chip + self.classifier_transfer)

    def per_frame(self, faces: int) -> float:
        """Device time per frame: detector, N classifier inferences, and two network switches if any face."""
        return self.detector() + self.classifier(faces) + (2 * self.switch if faces else 0.0)


@dataclass(frozen=True)
class Projection:
    layout: Layout
    faces: int
    period_ms: float  # time between frames at steady state (throughput bound)
    fps: float
    latency_ms: float  # capture -> publish of one frame, without queueing
    device_busy: float  # share of wall time the device (link + chip) works, 0..1
    bottleneck: str  # the stage setting the period


def _stages(layout: Layout, host: HostCosts, dev: DeviceCosts, faces: int) -> dict[str, float]:
    """Each thread's (or the device's) milliseconds per frame under ``layout``."""
    detect_host = host.preprocess + host.dequantize + host.decode
    face_host = faces * (host.crop_per_face + host.classify_post_per_face)
    publish = host.publish_base + faces * host.publish_per_face
    device = dev.per_frame(faces)
    if layout == "sequential":  # one inference thread: host and device work alternate
        return {"capture": host.capture, "inference thread": detect_host + face_host + device, "publish": publish,
                "device": device}
    if layout == "two_stage":  # detect thread | classify thread (the next frame's detection overlaps the faces)
        return {"capture": host.capture, "detect thread": detect_host + dev.detector(),
                "classify thread": face_host + dev.classifier(faces) + (2 * dev.switch if faces else 0.0),
                "publish": publish, "device": device}
    # overlapped: every host stage on its own core, the next frame's job already queued when the device frees up
    return {"capture": host.capture, "preprocess": host.preprocess,
            "postprocess": host.dequantize + host.decode + face_host, "publish": publish, "device": device}


def project(layout: Layout, host: HostCosts, dev: DeviceCosts, faces: int) -> Projection:
    """Steady-state fps, latency and device busy share for frames with ``faces`` faces (fast source)."""
    if faces < 0:
        raise ValueError(f"faces must be >= 0, got {faces}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    stages = _stages(layout, host, dev, faces)
    bottleneck = max(stages, key=lambda k: stages[k])
    period = stages[bottleneck]
    latency = (host.capture + host.preprocess + dev.detector() + host.dequantize + host.decode
               + faces * (host.crop_per_face + host.classify_post_per_face) + dev.classifier(faces)
               + (2 * dev.switch if faces else 0.0) + host.publish_base + faces * host.publish_per_face)
    return Projection(layout, faces, period, 1000.0 / period, latency, stages["device"] / period, bottleneck)


def device_costs(arch: Literal["hailo8", "hailo8l"], link: PcieLink, *, floor_at_reference: bool = True,
                 switch_ms: float = 0.0) -> DeviceCosts:
    """The detector and classifier device costs for ``arch`` from :data:`PUBLISHED` and ``link``.

    Detector: scrfd_500m (1.5 GOPS at 640x640, the nearest published face detector; ours is 1.29 GOPS at
    640x384), scaled by operations. Classifier: mobilenet_v3_large_minimalistic (0.42 GOPS at 224, the smallest
    published MobileNetV3; ours is ~0.06 GOPS), not scaled below it when ``floor_at_reference``.
    """
    det = chip_ms(PUBLISHED[("scrfd_500m", arch)], DETECTOR_GMAC_640X384, floor_at_reference=False)
    cls = chip_ms(PUBLISHED[("mobilenet_v3_large_minimalistic", arch)], CLASSIFIER_GMAC_160,
                  floor_at_reference=floor_at_reference)
    din, dout = detector_bytes()
    cin, cout = classifier_bytes()
    return DeviceCosts(det, transfer_ms(din + dout, link), cls, transfer_ms(cin + cout, link), switch_ms)
