"""ACWFace variants: parameter counts against seed 004, output shapes, EDAM/WFPN/SCM details, deploy form."""

from __future__ import annotations

import pytest
import torch

from build.nets.acwface import (
    EDAM,
    SCM,
    VARIANTS,
    build,
    channel_shuffle,
    deploy_from_dcn,
    eca_kernel_size,
    init_from,
)
from build.nets.retinaface import RetinaFace, prior_boxes

# Rows whose published figure the description pins down exactly (the others are budgets, see README).
EXACT_PARAMS = {"retinaface": 426_608, "wfpn": 426_738, "wfpn_scm": 523_986}


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(("key", "want"), sorted(EXACT_PARAMS.items()))
def test_params_match_seed_exactly(key: str, want: int) -> None:
    assert _params(build(key)) == want


def test_wfpn_adds_exactly_two_single_channel_gates() -> None:
    assert _params(build("wfpn")) - _params(build("retinaface")) == 2 * (64 + 1)


def test_edam_adds_only_conv1d_and_spatial_conv() -> None:
    assert eca_kernel_size(64) == 3
    assert _params(EDAM(64)) == 3 + 2 * 7 * 7
    assert _params(build("acwface")) - _params(build("wfpn_scm")) == 3 * (3 + 98)


def test_dcn_variant_meets_the_product_budget() -> None:
    from build.flops import count

    c = count(build("acwface_dcn"), (640, 640))
    assert c.params <= 478_200
    assert c.macs <= 1.124e9
    # the deformable fusion is self-counted (offset predictor + sampling), not skipped
    assert any(".fuse.0" in name for name in c.per_module)


@pytest.mark.parametrize("key", list(VARIANTS))
def test_forward_shapes(key: str) -> None:
    model = build(key).eval()
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        loc, conf, ldm = model(x)
    a = prior_boxes(96, 160).shape[0]
    assert loc.shape == (1, a, 4) and conf.shape == (1, a, 2) and ldm.shape == (1, a, 10)
    torch.testing.assert_close(conf.sum(-1), torch.ones(1, a))


def test_scm_fusion_kinds_have_same_branch_weights() -> None:
    dense, dcn, grouped = SCM(64, 64, fusion="dense"), SCM(64, 64, fusion="dcn"), SCM(64, 64, fusion="grouped")
    branch = {k: v.shape for k, v in dense.state_dict().items() if not k.startswith("fuse")}
    for m in (dcn, grouped):
        assert {k: v.shape for k, v in m.state_dict().items() if not k.startswith("fuse")} == branch
    with pytest.raises(ValueError, match="unknown SCM fusion"):
        SCM(64, 64, fusion="bogus")


def test_channel_shuffle_interleaves_groups() -> None:
    x = torch.arange(8.0).reshape(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


def test_fresh_dcn_equals_its_deploy_twin() -> None:
    torch.manual_seed(0)
    dcn = build("acwface_dcn").eval()
    deploy = deploy_from_dcn(dcn).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(dcn(x), deploy(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not any("offset_conv" in k for k in deploy.state_dict())


def test_init_from_plain_retinaface_copies_backbone_fpn_heads_and_ssh_shaped_convs() -> None:
    teacher = RetinaFace()
    student = build("acwface_dcn")
    copied, left = init_from(student, teacher.state_dict())
    assert all(k in copied for k in teacher.state_dict() if k.startswith(("body.", "fpn.output", "ClassHead")))
    assert "ssh1.conv5X5_1.0.weight" in copied and "ssh1.conv3X3.0.weight" not in copied  # 64->16 vs 64->32
    assert any("offset_conv" in k for k in left) and "fpn.weight1.weight" in left
