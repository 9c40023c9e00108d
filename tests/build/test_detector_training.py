"""Detector training pieces: label.txt parsing, augmentation geometry, anchor matching + multibox loss, NMS,
and a few-step distillation smoke run on one real registry image (loss goes down, checkpoint + resume)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from build.detector_data import Sample, hflip, parse_label_file, to_targets, train_augment
from build.losses import match, multibox_loss, point_form
from build.nets.retinaface import decode_boxes, prior_boxes
from build.train_detector import nms

LABELS = """# 0--Parade/a.jpg
10 20 30 40 15 25 0.0 35 25 0.0 25 35 0.0 18 50 0.0 32 50 0.0 0.9
100 100 50 60 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1
# 1--Handshaking/b.jpg
5 5 0 10 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1
7 8 9 10
"""


def test_parse_label_file(tmp_path: Path) -> None:
    path = tmp_path / "label.txt"
    path.write_text(LABELS, encoding="utf-8")
    a, b = parse_label_file(path)
    assert a.path == "0--Parade/a.jpg" and b.path == "1--Handshaking/b.jpg"
    np.testing.assert_allclose(a.boxes, [[10, 20, 40, 60], [100, 100, 150, 160]])
    np.testing.assert_allclose(a.landmarks[0], [15, 25, 35, 25, 25, 35, 18, 50, 32, 50])
    assert a.has_landmarks.tolist() == [True, False]
    # zero-width box dropped; a 4-number (val layout) row has no landmarks
    np.testing.assert_allclose(b.boxes, [[7, 8, 16, 18]])
    assert b.has_landmarks.tolist() == [False]


def test_bad_label_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "label.txt"
    path.write_text("# x.jpg\n1 2 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"label.txt:2"):
        parse_label_file(path)


def _sample() -> Sample:
    img = np.zeros((100, 200, 3), np.uint8)
    boxes = np.array([[10, 20, 50, 70]], np.float32)
    lm = np.array([[20, 30, 40, 30, 30, 45, 22, 60, 38, 60]], np.float32)
    return Sample(img, boxes, lm, np.array([True]))


def test_hflip_mirrors_boxes_and_swaps_left_right_landmarks() -> None:
    f = hflip(_sample())
    np.testing.assert_allclose(f.boxes, [[150, 20, 190, 70]])
    # left eye (x=20) becomes the right one at 180; the image-left eye is the old right eye (40 -> 160)
    np.testing.assert_allclose(f.landmarks, [[160, 30, 180, 30, 170, 45, 162, 60, 178, 60]])
    np.testing.assert_allclose(hflip(f).landmarks, _sample().landmarks)


def test_train_augment_moves_landmarks_with_their_box() -> None:
    rng = np.random.default_rng(0)
    src = _sample()
    offset = src.landmarks[0, 4] - src.boxes[0, 0]  # nose x relative to the box's left edge, in box widths
    rel = offset / (src.boxes[0, 2] - src.boxes[0, 0])
    for _ in range(20):
        s = train_augment(src, 160, rng)
        assert s.image.shape == (160, 160, 3)
        assert len(s) == 1  # crops always keep the face centre
        box, nose_x = s.boxes[0], s.landmarks[0, 4]
        assert (box >= 0).all() and (box <= 160).all() and box[2] > box[0]
        if box[0] > 0 and box[2] < 160:  # box not clipped by the crop: the nose keeps its relative position
            np.testing.assert_allclose((nose_x - box[0]) / (box[2] - box[0]), rel, atol=0.02)
        t = to_targets(s)
        assert t.shape == (len(s), 15) and (t[:, :4] <= 1).all()


def test_match_encodes_targets_that_decode_back() -> None:
    priors = prior_boxes(160, 160)
    target = torch.tensor([[0.2, 0.2, 0.45, 0.5, *([0.3, 0.3] * 5), 1.0]])
    loc, conf, _landm = match(target, priors, (0.1, 0.2))
    pos = conf > 0
    assert pos.any()
    decoded = decode_boxes(loc[pos], priors[pos], (0.1, 0.2))
    torch.testing.assert_close(decoded, target[:, :4].expand_as(decoded), rtol=1e-5, atol=1e-5)
    assert not torch.equal(point_form(priors)[pos], decoded)


def test_multibox_loss_is_small_for_the_matched_truth_and_ignores_missing_landmarks() -> None:
    priors = prior_boxes(160, 160)
    t = [torch.tensor([[0.2, 0.2, 0.45, 0.5, *([-1.0] * 10), -1.0]])]
    loc_t, conf_t, _ = match(t[0], priors, (0.1, 0.2))
    logits = torch.tensor([8.0, -8.0]).repeat(1, len(priors), 1)
    logits[0, conf_t != 0] = torch.tensor([-8.0, 8.0])
    perfect = multibox_loss(loc_t[None], logits, torch.zeros(1, len(priors), 10), t, priors)
    assert perfect.positives > 0 and float(perfect.loc) < 1e-6 and float(perfect.cls) < 1e-3
    assert float(perfect.landm) == 0.0  # label -1: no landmark loss
    wrong = multibox_loss(torch.zeros(1, len(priors), 4), torch.zeros(1, len(priors), 2),
                          torch.zeros(1, len(priors), 10), t, priors)
    assert float(wrong.total) > float(perfect.total) + 1.0


def test_nms_keeps_best_of_overlapping_boxes() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    keep = nms(boxes, torch.tensor([0.8, 0.9, 0.5]), 0.4)
    assert keep.tolist() == [1, 2]


@pytest.mark.slow
def test_distillation_smoke_on_one_real_image(tmp_path: Path) -> None:
    from build.distill_detector import (
        build_student,
        distill_step,
        load_frames,
        main,
        make_batch,
        teacher_sample,
    )
    from build.nets.retinaface import load_pretrained_retinaface

    torch.manual_seed(0)
    teacher = load_pretrained_retinaface()
    (frame,) = load_frames({"single_face.jpg": 1})
    s = teacher_sample(teacher, frame)
    assert len(s) == 1  # the teacher finds the one face
    student = build_student("acwface_dcn", teacher, None)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    rng = np.random.default_rng(1337)
    clean, strong = make_batch([s, s], 160, rng, face_crop_p=1.0)
    priors = prior_boxes(160, 160)
    losses = [distill_step(student, teacher, opt, clean, strong, priors, 5.0, 5.0).total for _ in range(6)]
    assert losses[-1] < losses[0]

    out = tmp_path / "run"
    common = ["--out", str(out), "--batch", "2", "--size", "128", "--sources", "single_face.jpg",
              "--no-eval", "--checkpoint-every", "1", "--threads", "1"]
    assert main([*common, "--steps", "2"]) == 0
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ck["step"] == 2 and (out / "student.pt").is_file()
    assert main([*common, "--steps", "3", "--resume"]) == 0
    assert torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["step"] == 3
