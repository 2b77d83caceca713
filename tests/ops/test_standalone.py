"""detkit.ops imports alone and drops into a torchvision detector's training step."""

import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection import fcos as tv_fcos
from torchvision.models.detection.anchor_utils import AnchorGenerator

from detkit.ops import ciou_loss, giou_loss


def test_ops_import_pulls_in_nothing_else_of_detkit():
    code = (
        "import sys\n"
        "from detkit.ops import ciou_loss, diou_nms\n"
        "mods = sorted(m for m in sys.modules if m.startswith('detkit'))\n"
        "print(','.join(mods))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mods = set(out.stdout.strip().split(","))
    assert mods <= {
        "detkit",
        "detkit.ops",
        "detkit.ops.boxes",
        "detkit.ops.iou_loss",
        "detkit.ops.nms",
        "detkit.ops._nms_sparse",
    }, mods


class TinyBackbone(nn.Module):
    """Two feature levels (strides 8 and 16) with 32 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.out_channels = 32
        self.c1 = nn.Sequential(nn.Conv2d(3, 32, 3, 8, 1), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU())

    def forward(self, x):
        f1 = self.c1(x)
        return {"0": f1, "1": self.c2(f1)}


def fcos_step(monkeypatch, loss_fn):
    torch.manual_seed(0)
    anchors = AnchorGenerator(sizes=((32,), (64,)), aspect_ratios=((1.0,), (1.0,)))
    model = FCOS(
        TinyBackbone(), num_classes=3, anchor_generator=anchors, min_size=128, max_size=128
    )
    calls = []

    def spy(boxes1, boxes2, reduction="none", eps=1e-7):
        calls.append(boxes1.shape[0])
        return loss_fn(boxes1, boxes2, reduction=reduction, eps=eps)

    monkeypatch.setattr(tv_fcos, "generalized_box_iou_loss", spy)
    images = [torch.rand(3, 128, 128)]
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 70.0, 90.0]]), "labels": torch.tensor([1])}]
    losses = model(images, targets)
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return losses, calls, grads


def test_detkit_loss_drops_into_torchvision_fcos(monkeypatch):
    ref, _, _ = fcos_step(monkeypatch, torchvision.ops.generalized_box_iou_loss)
    losses, calls, grads = fcos_step(monkeypatch, giou_loss)
    assert calls and calls[0] > 0  # detkit's loss was called on the positive locations
    torch.testing.assert_close(losses["bbox_regression"], ref["bbox_regression"])
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # CIoU, which torchvision's FCOS cannot use, trains the same way
    losses, calls, grads = fcos_step(monkeypatch, ciou_loss)
    assert torch.isfinite(losses["bbox_regression"]) and calls
    assert losses["bbox_regression"].item() != pytest.approx(ref["bbox_regression"].item())
