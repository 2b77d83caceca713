"""Dense detector: training drives the loss down, eval output contract, mixup weights,
empty targets, custom parts, ONNX export. Tiny inputs so the file runs in seconds."""

import io
import math
import warnings

import pytest
import torch

from detkit.models.backbones import build_backbone
from detkit.models.detectors.dense import DenseDetector, dense_detector
from detkit.models.necks import FPN
from detkit.models.targets import DegenerateBoxWarning


@pytest.fixture(autouse=True)
def _one_thread():
    # the machine's cores are shared; one thread is faster than contending for them
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images():
    return [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(i)) for i in (0, 1)]


def _targets():
    return [
        {
            "boxes": torch.tensor([[10.0, 10, 50, 60], [70, 70, 90, 100]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.tensor([[30.0, 20, 100, 90]]), "labels": torch.tensor([3])},
    ]


def _model(**kw):
    torch.manual_seed(0)
    args = dict(backbone="snet49", neck="fpn", neck_channels=32, head_convs=1, anchors="s3fd")
    args.update(kw)
    return dense_detector(3, **args)


def _train(model, steps=30, lr=0.01):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    history = []
    for _ in range(steps):
        losses = model(_images(), _targets())
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    return history


@pytest.mark.parametrize(
    "kw",
    [
        dict(box_loss="giou"),
        dict(
            neck="ssh",
            box_loss="smooth_l1",
            sampling="ohem",
            scale_compensation=True,
            head_norm="bn",
            anchors="faceboxes",
            densify=True,
        ),
    ],
    ids=["fpn-giou", "ssh-smoothl1-ohem-s3fd-dense"],
)
def test_loss_goes_down(kw):
    history = _train(_model(**kw))
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < 0.7 * history[0], history


@pytest.mark.parametrize("kind", ["smooth_l1", "iou", "giou", "diou", "ciou"])
def test_every_box_loss_trains(kind):
    model = _model(box_loss=kind).train()
    losses = model(_images(), _targets())
    total = sum(losses.values())
    assert torch.isfinite(total) and losses["loss_box"].item() > 0
    total.backward()
    assert model.head.bbox_pred.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["nms", "diou_nms", "soft_nms", "cluster_nms"])
def test_every_nms_kind_gives_sorted_detections(kind):
    model = _model(nms=kind, score_threshold=0.0, max_detections=20).eval()
    with torch.no_grad():
        det = model(_images()[:1])[0]
    assert det["boxes"].shape == (20, 4) and det["labels"].dtype == torch.int64
    assert bool((det["scores"][:-1] >= det["scores"][1:]).all())


def test_eval_output_sorted_clipped_typed():
    model = _model(score_threshold=0.0, max_detections=50).eval()
    images = [torch.rand(3, 100, 120), torch.rand(3, 128, 96)]
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det, img in zip(out, images, strict=True):
        h, w = img.shape[-2:]
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].dtype == torch.float32 and det["labels"].dtype == torch.int64
        assert det["boxes"].shape == (50, 4) and det["scores"].shape == (50,)
        assert bool((det["scores"][:-1] >= det["scores"][1:]).all())
        assert det["boxes"][:, 0::2].min() >= 0 and det["boxes"][:, 0::2].max() <= w
        assert det["boxes"][:, 1::2].min() >= 0 and det["boxes"][:, 1::2].max() <= h
        assert det["labels"].min() >= 1 and det["labels"].max() <= 3


def test_empty_targets_train():
    model = _model().train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model(_images(), [empty, dict(empty)])
    total = sum(losses.values())
    assert torch.isfinite(total)
    # no positive: the box loss is exactly 0, the focal loss on negatives is not
    assert losses["loss_box"].item() == 0.0 and losses["loss_cls"].item() > 0
    total.backward()


def test_box_weights_scale_losses():
    model = _model().train()
    images = _images()
    full = model(images, _targets())
    halved = [dict(t, weights=torch.full((len(t["labels"]),), 0.5)) for t in _targets()]
    half = model(images, halved)
    # every positive anchor's box loss is multiplied by its box's weight 0.5; normaliser unchanged
    assert half["loss_box"].item() == pytest.approx(0.5 * full["loss_box"].item(), rel=1e-4)
    assert half["loss_cls"].item() < full["loss_cls"].item()


def test_head_logits_shape():
    model = _model().eval()
    logits = model.head_logits(_images())
    # 128 x 128 on strides 8..128: 16^2 + 8^2 + 4^2 + 2^2 + 1 = 341 cells, 1 anchor each (S3FD)
    assert logits.shape == (2, 341, 3)
    torch.testing.assert_close(torch.sigmoid(logits).mean(), torch.tensor(0.01), atol=5e-3, rtol=0)


def test_custom_parts_are_used():
    calls = {"loss": 0, "nms": 0}

    def l1(pred, target):
        calls["loss"] += 1
        return (pred - target).abs().sum(dim=1)

    def no_nms(boxes, scores, labels, iou_threshold):
        calls["nms"] += 1
        order = torch.argsort(scores, descending=True)
        return order, scores[order]

    model = _model(box_loss=l1, nms=no_nms, score_threshold=0.0, max_detections=5)
    assert isinstance(model, DenseDetector)
    model.train()
    model(_images(), _targets())
    model.eval()
    with torch.no_grad():
        out = model(_images()[:1])
    assert calls == {"loss": 2, "nms": 1}
    assert out[0]["scores"].shape == (5,)


def test_given_neck_module_is_used():
    torch.manual_seed(0)
    backbone = build_backbone("snet49")
    channels = [backbone.out_channels[k] for k in ("c3", "c4", "c5")]
    neck = FPN(channels, out_channels=16, num_outs=3)  # P3-P5 only
    model = dense_detector(2, backbone=backbone, neck=neck, head_convs=1, anchors="s3fd")
    assert model.neck is neck and model.anchor_generator.strides == [8, 16, 32]
    # 128 x 128: 16^2 + 8^2 + 4^2 = 336 anchors
    assert model.eval().head_logits(_images()).shape == (2, 336, 2)


def test_zero_area_box_warns_and_trains():
    model = _model().train()
    targets = _targets()
    targets[0] = {"boxes": torch.tensor([[10.0, 10, 10, 40]]), "labels": torch.tensor([1])}
    with pytest.warns(DegenerateBoxWarning, match="1 zero-area"):
        losses = model(_images(), targets)
    assert torch.isfinite(sum(losses.values()))
    # the zero-area box can match no anchor (IoU 0), so it is dropped and the losses equal
    # those of an image with no box at all
    targets[0] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    without = model(_images(), targets)
    for key, value in losses.items():
        torch.testing.assert_close(value, without[key])


def test_bad_inputs():
    model = _model().train()
    with pytest.raises(ValueError, match="targets are required"):
        model(_images())
    with pytest.raises(ValueError, match="labels must be in 1..3"):
        model(_images(), [{"boxes": torch.zeros(1, 4), "labels": torch.tensor([4])}] * 2)
    with pytest.raises(ValueError, match="unknown box_loss"):
        _model(box_loss="l2")
    with pytest.raises(ValueError, match="unknown neck"):
        _model(neck="bifpn")


def test_onnx_export_eval_forward():
    onnx = pytest.importorskip("onnx", reason="the ONNX export check needs the onnx package")
    model = _model(score_threshold=0.001).eval()

    class Single(torch.nn.Module):
        def __init__(self, detector):
            super().__init__()
            self.detector = detector

        def forward(self, image):
            det = self.detector([image])[0]
            return det["boxes"], det["scores"], det["labels"]

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Single(model), (torch.rand(3, 128, 128),), buf, dynamo=False, opset_version=17
        )
    graph = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(graph)

    def ops(g):
        found = set()
        for node in g.node:
            found.add(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    found |= ops(attr.g)
        return found

    assert {"NonMaxSuppression", "TopK", "Conv"} <= ops(graph.graph)


def _scale_case_loss(logits=None, **kw):
    """The detector's own loss on the S3FD hand case of tests/models/test_matching.py:
    G0 (0, 0, 16, 16) label 1, tiny G1 (40, 40, 48, 48) label 2; anchors a0 = G0, a1 and a2
    shifted by 4 px (IoU 0.6 with G0), a3 and a4 16-px squares containing G1 (IoU 0.25),
    a5 (IoU 0.053) and a6 (IoU 0.176)."""
    anchors = torch.tensor([[0.0, 0, 16, 16], [4, 0, 20, 16], [0, 4, 16, 20], [36, 36, 52, 52],
                            [40, 40, 56, 56], [44, 44, 60, 60], [42, 40, 58, 56]])
    target = {"boxes": torch.tensor([[0.0, 0, 16, 16], [40, 40, 48, 48]]),
              "labels": torch.tensor([1, 2])}
    args = dict(match_high=0.5, match_low=0.4, allow_low_quality_matches=False,
                stage1_threshold=0.35, box_loss="smooth_l1", box_loss_weight=1.0,
                focal_alpha=0.25, focal_gamma=2.0)
    args.update(kw)
    model = _model(**args)
    return model.loss(logits if logits is not None else torch.zeros(1, 7, 3),
                      torch.zeros(1, 7, 4), anchors, [target])


LN2 = math.log(2.0)
# zero logits: focal loss ln2 * 0.25 * 0.25 for a target 1, ln2 * 0.75 * 0.25 for a target 0;
# over K = 3 classes a positive anchor costs 0.4375 ln2, a negative 0.5625 ln2
POS, NEG = 0.4375 * LN2, 0.5625 * LN2
B = 1 / 18  # smooth-L1 (beta 1/9) of |d| >= 1/9 is |d| - 1/18


def test_scale_compensation_switch_changes_the_loss():
    # off: only a0-a2 (IoU >= 0.5) positive, a3-a6 negative: cls (3 POS + 4 NEG) / 3;
    # box: a1 dx = (8 - 12) / 16 = -0.25, a2 dy likewise, a0 exact -> 2 (0.25 - 1/18) / 3
    off = _scale_case_loss(scale_compensation=False)
    assert float(off["loss_cls"]) == pytest.approx((3 * POS + 4 * NEG) / 3, rel=1e-5)
    assert float(off["loss_box"]) == pytest.approx(2 * (0.25 - B) / 3, rel=1e-5)
    # on: stage 2 gives the tiny G1 its top N = 2 anchors a3, a4: 5 positives.
    # a3 (same centre, twice G1's size): dw = dh = ln(8 / 16) -> 2 (ln 2 - 1/18);
    # a4: dx = dy = (44 - 48) / 16 = -0.25 and dw = dh = -ln 2
    on = _scale_case_loss(scale_compensation=True)
    assert float(on["loss_cls"]) == pytest.approx((5 * POS + 2 * NEG) / 5, rel=1e-5)
    box = 2 * (0.25 - B) + 2 * (LN2 - B) + 2 * (0.25 - B) + 2 * (LN2 - B)
    assert float(on["loss_box"]) == pytest.approx(box / 5, rel=1e-5)


def test_box_loss_switch_changes_the_box_loss():
    # zero deltas decode to the anchors: GIoU loss a0 0; a1, a2: IoU 192 / 320 = 0.6, the
    # enclosing box (0, 0, 20, 16) is the union, so 1 - GIoU = 0.4 each; over 3 positives
    giou = _scale_case_loss(box_loss="giou", box_loss_weight=1.0)
    assert float(giou["loss_box"]) == pytest.approx(0.8 / 3, rel=1e-5)
    twice = _scale_case_loss(box_loss="giou", box_loss_weight=2.0)
    assert float(twice["loss_box"]) == pytest.approx(1.6 / 3, rel=1e-5)
    smooth = _scale_case_loss(box_loss="smooth_l1", box_loss_weight=1.0)
    assert float(smooth["loss_box"]) == pytest.approx(2 * (0.25 - B) / 3, rel=1e-5)


def _focal(x: float, t: int) -> float:
    """Plain-Python sigmoid focal loss (alpha 0.25, gamma 2) of one logit."""
    p = 1.0 / (1.0 + math.exp(-x))
    p_t, a_t = (p, 0.25) if t else (1.0 - p, 0.75)
    return -a_t * (1.0 - p_t) ** 2 * math.log(p_t)


def test_ohem_switch_keeps_the_hardest_negatives():
    # 3 positives (a0-a2, zero logits) and negatives a3-a6 with constant logits -2, 1, 0, 2:
    # OHEM with ratio 1 keeps the 3 hardest negatives (a6, a4, a5), drops a3 (logit -2)
    rows = [0.0, 0.0, 0.0, -2.0, 1.0, 0.0, 2.0]
    logits = torch.tensor(rows)[None, :, None].expand(1, 7, 3).contiguous()
    neg = {a: 3 * _focal(rows[a], 0) for a in range(3, 7)}
    ohem = _scale_case_loss(sampling="ohem", neg_pos_ratio=1.0, logits=logits)
    assert float(ohem["loss_cls"]) == pytest.approx((3 * POS + neg[4] + neg[5] + neg[6]) / 3,
                                                    rel=1e-5)
    every = _scale_case_loss(sampling="none", logits=logits)
    assert float(every["loss_cls"]) == pytest.approx((3 * POS + sum(neg.values())) / 3, rel=1e-5)


def test_densify_switch_tiles_the_small_anchors():
    # FaceBoxes sizes (8, 16, 32) at stride 8: densify -> densities 4, 2, 1: 16 + 4 + 1 = 21
    # anchors per cell instead of 3. A 64 x 64 input has 8^2 + 4^2 + 2^2 + 1 + 1 = 86 cells
    images = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))]
    for densify, per_cell in ((False, 3), (True, 21)):
        model = _model(neck_channels=16, anchors="faceboxes", densify=densify).eval()
        with torch.no_grad():
            assert model.head_logits(images).shape == (1, 86 * per_cell, 3)
            _, _, anchors, _ = model._forward_head(images)
        first = anchors[0][:per_cell]  # cell (0, 0) of stride 8
        small = first[(first[:, 2] - first[:, 0]) == 8]
        centres = sorted(((small[:, :2] + small[:, 2:]) / 2).tolist())
        # off: one 8-px anchor at the cell centre (4, 4); on: 4 x 4 tiles at (k + 0.5) * 2
        grid = [1.0, 3.0, 5.0, 7.0] if densify else [4.0]
        assert centres == [[x, y] for x in grid for y in grid]


def test_builder_defaults_and_input_statistics_reach_the_model() -> None:
    torch.manual_seed(0)
    model = dense_detector(3, backbone="snet49", neck="fpn", neck_channels=32, anchors="s3fd",
                           image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25))
    # RetinaNet's 4 convolutions per tower by default
    for tower in (model.head.cls_tower, model.head.box_tower):
        assert sum(isinstance(m, torch.nn.Conv2d) for m in tower.modules()) == 4
    # the transform normalises with the given statistics: (0.75 - 0.5) / 0.25 = 1
    batch = model.transform([torch.full((3, 32, 32), 0.75)])
    torch.testing.assert_close(batch.tensor, torch.ones(1, 3, 32, 32))
