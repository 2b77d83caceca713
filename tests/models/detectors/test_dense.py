"""Dense detector: training drives the loss down, eval output contract, mixup weights,
empty targets, custom parts, ONNX export. Tiny inputs so the file runs in seconds."""

import io
import warnings

import pytest
import torch

from detkit.models.backbones import build_backbone
from detkit.models.detectors.dense import DenseDetector, dense_detector
from detkit.models.detectors.dense_loss import DegenerateBoxWarning
from detkit.models.necks import FPN


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
