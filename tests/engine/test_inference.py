"""detkit.engine.inference: options, EMA loading, post-processing overrides, pyramid merge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detkit.config import defaults, merge
from detkit.data.coco import CocoDetection
from detkit.data.synthetic import generate_synthetic_coco
from detkit.data.transforms import build_transforms
from detkit.engine.build import build_model_from_cfg
from detkit.engine.checkpoint import atomic_save
from detkit.engine.evaluate import predict_dataset
from detkit.engine.inference import (
    Predictor,
    TestOptions,
    class_names_from_config,
    keep_raw,
    letterbox_image,
    load_detector,
    merge_detections,
    postprocess_config,
    read_test_options,
    rescale_detections,
    state_dict_from_checkpoint,
    with_postprocess,
)
from detkit.models.build import build_model

TINY_DENSE = {"type": "dense_detector", "backbone": "snet49", "neck": "fpn", "neck_channels": 16,
              "head_convs": 1, "head_norm": "none"}


def _det(boxes: list, scores: list, labels: list) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def _cfg(**sections) -> dict:
    return merge(merge(defaults(), {"device": "cpu", "model": dict(TINY_DENSE)}), sections)


def test_read_test_options_defaults_and_errors() -> None:
    opts = read_test_options(_cfg(data={"img_size": 320}))
    assert opts.img_size == 320 and opts.sizes == (320,) and opts.nms is None
    assert opts.max_dets == (1, 10, 100) and dict(opts.extra_area_ranges) == {}
    cfg = _cfg()
    cfg["test"] = {"img_size": None, "scales": [256, 320], "nms": "soft_nms",
                   "iou_threshold": 0.6, "extra_area_ranges": {"tiny": [0, 256]}}
    opts = read_test_options(cfg)
    assert opts.img_size == 512 and opts.sizes == (256, 320) and opts.iou_threshold == 0.6
    assert dict(opts.extra_area_ranges) == {"tiny": (0.0, 256.0)}
    for bad in ({"nms": "fast_nms"}, {"scales": [0]}, {"score_threshold": 1.5},
                {"max_detections": 0}):
        cfg["test"] = bad
        with pytest.raises(ValueError, match="test"):
            read_test_options(cfg)


def test_rescale_detections_divides_and_clips() -> None:
    det = _det([[20.0, 10.0, 60.0, 50.0], [100.0, 0.0, 140.0, 30.0]], [0.9, 0.5], [1, 2])
    out = rescale_detections(det, 2.0, (20, 60))  # original image h=20, w=60
    # [20,10,60,50]/2 = [10,5,30,25] -> y2 clipped to 20; [100,0,140,30]/2 = [50,0,70,15] -> x2 60
    assert out["boxes"].tolist() == [[10.0, 5.0, 30.0, 20.0], [50.0, 0.0, 60.0, 15.0]]
    assert out["labels"].tolist() == [1, 2] and det["boxes"][0, 0] == 20.0  # input untouched
    with pytest.raises(ValueError, match="img_scale"):
        rescale_detections(det, 0.0, (20, 60))


def test_pyramid_merge_of_hand_made_detections() -> None:
    # Image 40x40. Scale 1 (img_scale 1): A = [10,10,20,20] label 1 score 0.9.
    # Scale 2 (img_scale 2, input pixels): B = [20,20,40,40] label 1 score 0.8 -> [10,10,20,20]
    # (IoU 1 with A: suppressed); C = [20,20,40,40] label 2 score 0.7 -> [10,10,20,20] (other
    # class: kept); D = [60,60,80,80] label 1 score 0.95 -> [30,30,40,40] (no overlap: kept);
    # E = [22,20,42,40] label 1 score 0.6 -> [11,10,21,20]: IoU with A = 90/110 = 0.818 > 0.5.
    scale1 = rescale_detections(_det([[10, 10, 20, 20]], [0.9], [1]), 1.0, (40, 40))
    scale2 = rescale_detections(
        _det([[20, 20, 40, 40], [20, 20, 40, 40], [60, 60, 80, 80], [22, 20, 42, 40]],
             [0.8, 0.7, 0.95, 0.6], [1, 2, 1, 1]), 2.0, (40, 40))
    merged = merge_detections([scale1, scale2], kind="nms", iou_threshold=0.5)
    assert merged["boxes"].tolist() == [[30, 30, 40, 40], [10, 10, 20, 20], [10, 10, 20, 20]]
    assert merged["scores"].tolist() == pytest.approx([0.95, 0.9, 0.7])
    assert merged["labels"].tolist() == [1, 1, 2]
    # With IoU threshold 0.9, E (IoU 0.818) survives too; max_detections=3 then drops it (0.6).
    loose = merge_detections([scale1, scale2], kind="diou_nms", iou_threshold=0.9)
    assert loose["scores"].tolist() == pytest.approx([0.95, 0.9, 0.7, 0.6])
    capped = merge_detections([scale1, scale2], kind="nms", iou_threshold=0.9, max_detections=3)
    assert capped["scores"].tolist() == pytest.approx([0.95, 0.9, 0.7])
    # Soft-NMS (gaussian, sigma 0.5: factor exp(-IoU^2 / 0.5)), class 1 in score order:
    # D 0.95 (no overlap); A 0.9 decays B (IoU 1) to 0.8 e^-2 and E (IoU 9/11) to
    # 0.6 e^(-2 (9/11)^2); E (0.157) is taken before B (0.108) and decays B by e^(-2 (9/11)^2).
    soft = merge_detections([scale1, scale2], kind="soft_nms", sigma=0.5)
    f = np.exp(-2 * (9 / 11) ** 2)
    assert soft["scores"].tolist() == pytest.approx([0.95, 0.9, 0.7, 0.6 * f,
                                                     0.8 * np.exp(-2) * f], rel=1e-5)
    assert soft["labels"].tolist() == [1, 1, 2, 1, 1]


def test_with_postprocess_copies_and_sets_both_detectors() -> None:
    dense = build_model({**TINY_DENSE, "num_classes": 3})
    changed = with_postprocess(dense, nms="diou_nms", iou_threshold=0.6, score_threshold=0.2,
                               max_detections=7)
    assert changed.postprocess_config.nms == "diou_nms"
    assert changed.postprocess_config.nms_threshold == 0.6
    assert (changed.postprocess_config.score_threshold, changed.postprocess_config.max_detections
            ) == (0.2, 7)
    assert dense.postprocess_config.nms == "nms" and dense.postprocess_config.max_detections == 100
    thunder = build_model({"type": "thundernet_lite", "num_classes": 3})
    assert postprocess_config(thunder).nms == "diou_nms"
    changed = with_postprocess(thunder, nms="soft_nms", max_detections=5)
    assert changed.rcnn.postprocess.nms == "soft_nms"
    assert changed.rcnn.postprocess.max_detections == 5
    assert thunder.rcnn.postprocess.nms == "diou_nms"
    with pytest.raises(ValueError, match="PostprocessConfig"):
        with_postprocess(torch.nn.Linear(2, 2), nms="nms")


def test_class_agnostic_nms_from_the_model_section_and_the_test_section() -> None:
    dense = build_model({**TINY_DENSE, "num_classes": 3, "class_agnostic_nms": True})
    assert postprocess_config(dense).class_agnostic_nms is True
    thunder = build_model({"type": "thundernet_lite", "num_classes": 3})
    assert postprocess_config(thunder).class_agnostic_nms is False
    opts = read_test_options(_cfg(test={"class_agnostic_nms": True}))
    assert opts.class_agnostic_nms is True
    assert read_test_options(_cfg()).class_agnostic_nms is None  # None: the model's own
    changed = with_postprocess(thunder, class_agnostic_nms=opts.class_agnostic_nms)
    assert changed.rcnn.postprocess.class_agnostic_nms is True
    assert changed.rcnn.postprocess.nms == "diou_nms"  # the rest is kept


def test_checkpoint_prefers_ema_weights(tmp_path: Path) -> None:
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg["model"], 3)
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    ckpt = {"model": model.state_dict(), "ema": {"module": ema, "updates": 5}, "config": cfg}
    assert state_dict_from_checkpoint(ckpt)[1] == "ema"
    assert state_dict_from_checkpoint(ckpt, prefer_ema=False)[1] == "model"
    assert state_dict_from_checkpoint({**ckpt, "ema": None})[1] == "model"
    path = atomic_save(ckpt, tmp_path / "ck.pth")
    opts = TestOptions(score_threshold=0.25)
    loaded = load_detector(cfg, path, 3, options=opts)
    weight = loaded.model.head.cls_logits.weight
    assert loaded.weights == "ema" and not loaded.model.training
    assert torch.equal(weight, ema["head.cls_logits.weight"])
    assert loaded.model.postprocess_config.score_threshold == 0.25
    raw = load_detector(cfg, ckpt, 3, prefer_ema=False)
    assert torch.equal(raw.model.head.cls_logits.weight, model.head.cls_logits.weight)
    with pytest.raises(ValueError, match="do not fit"):
        load_detector(cfg, ckpt, 4)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("syn")
    paths = generate_synthetic_coco(root, num_images=4, image_size=64, seed=1,
                                    split_fractions={"train": 0.5, "val": 0.5})
    torch.manual_seed(0)
    model = build_model({**TINY_DENSE, "num_classes": 6, "score_threshold": 0.3})
    with torch.no_grad():
        model.head.cls_logits.bias.zero_()  # scores near 0.5: plenty of detections
    return {"root": root, "val": paths["val"], "model": model.eval()}


def test_single_scale_equals_training_evaluation_path(synthetic: dict) -> None:
    model = synthetic["model"]
    raw = CocoDetection(synthetic["val"], synthetic["root"], transforms=keep_raw)
    results = predict_dataset(Predictor(model, [64]), raw, batch_size=2)
    # Reference: what make_evaluator does (dataset letterbox -> model -> detections / img_scale).
    val = CocoDetection(synthetic["val"], synthetic["root"], build_transforms(None, 64, False))
    expected = []
    for i in range(len(val)):
        image, target = val[i]
        with torch.no_grad():
            det = model([image])[0]
        for box, score, label in zip(det["boxes"] / target["img_scale"], det["scores"],
                                     det["labels"], strict=True):
            x1, y1, x2, y2 = box.tolist()
            expected.append((target["image_id"], int(label), [x1, y1, x2 - x1, y2 - y1],
                             float(score)))
    assert len(results) == len(expected) > 0
    for got, (image_id, label, bbox, score) in zip(results, expected, strict=True):
        assert got["image_id"] == image_id and got["category_id"] == label  # ids 1..6
        assert got["bbox"] == pytest.approx(bbox, abs=1e-4)
        assert got["score"] == pytest.approx(score, abs=1e-6)


def test_pyramid_of_one_repeated_scale_equals_single_scale(synthetic: dict) -> None:
    # Two identical scales: every box meets its identical twin (IoU 1 > 0.5) and one copy
    # survives, so the merged result is the single-scale one.
    model = synthetic["model"]
    image = np.asarray(
        CocoDetection(synthetic["val"], synthetic["root"], transforms=keep_raw)[0][0])
    single = Predictor(model, [64]).predict([image])[0]
    twice = Predictor(model, [64, 64], merge_nms="nms", merge_iou=0.5).predict([image])[0]
    assert len(single["boxes"]) > 0
    assert torch.allclose(twice["boxes"], single["boxes"])
    assert torch.allclose(twice["scores"], single["scores"])
    assert torch.equal(twice["labels"], single["labels"])
    # A real pyramid: every box lies inside the 64x64 original image.
    pyramid = Predictor(model, [64, 96]).predict([image])[0]
    assert len(pyramid["boxes"]) <= 100 and float(pyramid["boxes"].max()) <= 64.0


def test_letterbox_image_matches_dataset_transform(synthetic: dict) -> None:
    raw = CocoDetection(synthetic["val"], synthetic["root"], transforms=keep_raw)
    image = raw[0][0]
    tensor, scale = letterbox_image(image, 48)
    val = CocoDetection(synthetic["val"], synthetic["root"], build_transforms(None, 48, False))
    reference, target = val[0]
    assert scale == pytest.approx(48 / 64) and scale == target["img_scale"]
    assert torch.equal(tensor, reference)


def test_class_names_from_config(tmp_path: Path) -> None:
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"images": [], "annotations": [],
                               "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}]}))
    cfg = _cfg(data={"val": {"ann_file": str(ann)}})
    assert class_names_from_config(cfg) == ["a", "b"]  # sorted by id: label 1 = id 3
    with pytest.raises(ValueError, match="class names"):
        class_names_from_config(_cfg())


@pytest.mark.faults
@pytest.mark.parametrize("test_section, message", [
    ({"max_dets": [1, 10]}, "max_dets needs 3 limits"),
    ({"max_dets": [10, 1, 100]}, "distinct increasing"),
    ({"extra_area_ranges": {"tiny": [10, 5]}}, "needs 0 <= min < max"),
    ({"extra_area_ranges": {"small": [0, 5]}}, "reserved"),
    ({"extra_area_ranges": {"tiny": 5}}, "must map names to"),
])
def test_eval_options_rejected_before_inference(test_section, message):
    """Issue 13: tools/test.py checked these after inference, then crashed unsaved."""
    cfg = defaults()
    cfg["test"].update(test_section)
    with pytest.raises(ValueError, match=message):
        read_test_options(cfg)


def test_class_names_of_synthetic_data_not_generated_here(tmp_path) -> None:
    from detkit.config import defaults, merge
    from detkit.engine.inference import class_names_from_config

    cfg = merge(defaults(), {"data": {"synthetic": {
        "enabled": True, "out_dir": str(tmp_path / "absent"), "classes": ["cross", "circle"]}}})
    assert class_names_from_config(cfg) == ["cross", "circle"]
    cfg["data"]["synthetic"]["classes"] = []
    assert class_names_from_config(cfg) == ["circle", "square", "triangle", "star", "ellipse",
                                            "cross"]
