"""The Pi 5 + Hailo latency model's arithmetic (edge_agent.bench.hailo_model)."""

from __future__ import annotations

import pytest

from edge_agent.bench import hailo_model as hm

HOST = hm.HostCosts(capture=2.0, preprocess=0.5, dequantize=0.25, decode=0.25, crop_per_face=0.2,
                    classify_post_per_face=0.05, publish_base=0.5, publish_per_face=0.1)
DEV = hm.DeviceCosts(detector_chip=1.0, detector_transfer=2.0, classifier_chip=0.3, classifier_transfer=0.2)


def test_published_rows_are_the_cited_ones() -> None:
    assert hm.PUBLISHED[("scrfd_500m", "hailo8")].fps_batch1 == 831.0
    assert hm.PUBLISHED[("scrfd_500m", "hailo8l")].fps_batch1 == 588.0
    assert hm.PUBLISHED[("mobilenet_v3_large_minimalistic", "hailo8")].gops == 0.42
    assert all(f.source.startswith("hailo_model_zoo docs/public_models/") for f in hm.PUBLISHED.values())


def test_chip_ms_scales_by_operations_and_floors_at_the_reference() -> None:
    ref = hm.PublishedFigure("net", "hailo8", 1000.0, 2.0, (224, 224, 3), "test")
    assert ref.ms_per_frame == pytest.approx(1.0)
    assert hm.chip_ms(ref, 2.0, floor_at_reference=False) == pytest.approx(2.0)  # 4 GOPS: twice the time
    assert hm.chip_ms(ref, 0.5, floor_at_reference=False) == pytest.approx(0.5)
    assert hm.chip_ms(ref, 0.5, floor_at_reference=True) == pytest.approx(1.0)  # never below the reference
    assert hm.chip_ms(ref, 2.0, floor_at_reference=True) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="gmac"):
        hm.chip_ms(ref, 0.0, floor_at_reference=True)


def test_pcie_links_and_transfer_time() -> None:
    gen2, gen3 = hm.PCIE_LINKS["gen2x1"], hm.PCIE_LINKS["gen3x1"]
    assert gen2.bytes_per_s == pytest.approx(400e6)  # 500 MB/s after 8b/10b, 80 % payload
    assert gen3.raw_bytes_per_s == pytest.approx(984.6e6, rel=1e-3)
    assert hm.transfer_ms(400_000, gen2) == pytest.approx(1.0)
    assert hm.transfer_ms(0, gen3) == 0.0
    with pytest.raises(ValueError):
        hm.transfer_ms(-1, gen2)


def test_bytes_per_inference() -> None:
    din, dout = hm.detector_bytes()
    assert din == 640 * 384 * 3
    assert dout == (80 * 48 + 40 * 24 + 20 * 12) * 2 * 16  # 10,080 anchors x (2 + 4 + 10) uint8
    assert hm.classifier_bytes() == (160 * 160 * 3, 7)


def test_device_costs_from_the_published_rows() -> None:
    dev = hm.device_costs("hailo8", hm.PCIE_LINKS["gen2x1"])
    assert dev.detector_chip == pytest.approx(1000 / 831 * (2 * hm.DETECTOR_GMAC_640X384) / 1.5)
    assert dev.classifier_chip == pytest.approx(1000 / 3518)  # floored at the smallest published MobileNetV3
    assert dev.detector_transfer == pytest.approx(sum(hm.detector_bytes()) / 400e6 * 1000)
    slow = hm.device_costs("hailo8l", hm.PCIE_LINKS["gen2x1"])
    assert slow.detector_chip > dev.detector_chip and slow.classifier_chip > dev.classifier_chip


def test_host_costs_scale() -> None:
    s = HOST.scaled(2.0)
    assert s.capture == 4.0 and s.decode == 0.5 and s.publish_per_face == pytest.approx(0.2)
    with pytest.raises(ValueError):
        HOST.scaled(0.0)


def test_sequential_layout_alternates_host_and_device() -> None:
    p = hm.project("sequential", HOST, DEV, faces=1)
    device = 3.0 + 0.5
    inference = 0.5 + 0.25 + 0.25 + 0.25 + device  # detect host + face host + device
    assert p.period_ms == pytest.approx(inference) and p.bottleneck == "inference thread"
    assert p.fps == pytest.approx(1000 / inference)
    assert p.device_busy == pytest.approx(device / inference)
    assert p.latency_ms == pytest.approx(2.0 + 0.5 + 3.0 + 0.5 + 0.25 + 0.5 + 0.6)


def test_two_stage_and_overlapped_layouts() -> None:
    two = hm.project("two_stage", HOST, DEV, faces=1)
    assert two.bottleneck == "detect thread" and two.period_ms == pytest.approx(1.0 + 3.0)
    assert two.device_busy == pytest.approx(3.5 / 4.0)
    over = hm.project("overlapped", HOST, DEV, faces=1)
    assert over.bottleneck == "device" and over.device_busy == pytest.approx(1.0)
    assert over.fps == pytest.approx(1000 / 3.5)
    # No face: the classifier costs nothing and there is no network switch.
    zero = hm.project("overlapped", HOST, hm.DeviceCosts(1.0, 2.0, 0.3, 0.2, switch=0.4), faces=0)
    assert zero.period_ms == pytest.approx(3.0)


def test_capture_can_be_the_bottleneck() -> None:
    slow_capture = hm.HostCosts(10.0, 0.5, 0.25, 0.25, 0.2, 0.05, 0.5, 0.1)
    p = hm.project("overlapped", slow_capture, DEV, faces=1)
    assert p.bottleneck == "capture" and p.fps == pytest.approx(100.0)
    assert p.device_busy == pytest.approx(0.35)


def test_switch_cost_counts_twice_per_frame_with_faces() -> None:
    dev = hm.DeviceCosts(1.0, 2.0, 0.3, 0.2, switch=0.5)
    assert dev.per_frame(2) == pytest.approx(3.0 + 1.0 + 1.0)
    assert dev.per_frame(0) == pytest.approx(3.0)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="faces"):
        hm.project("sequential", HOST, DEV, faces=-1)
    with pytest.raises(ValueError, match="layout"):
        hm.project("parallel", HOST, DEV, faces=1)  # type: ignore[arg-type]
