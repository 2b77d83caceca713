"""detkit.engine.export: onnxruntime output equals PyTorch's for both detectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detkit.engine.export import (
    ExportWarning,
    OnnxDetector,
    describe_model,
    export_onnx,
    match_detections,
    run_onnxruntime,
)
from detkit.models.build import build_model

pytest.importorskip("onnx", reason="ONNX export tests need the onnx package")
pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime")

SIZE = 64


def _images() -> list[torch.Tensor]:
    """The tracing-like image and two others (the graph must not be tied to one image)."""
    return [torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(s))
            for s in (0, 5, 6)]


def _dense() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model({"type": "dense_detector", "num_classes": 3, "backbone": "snet49",
                         "neck": "fpn", "neck_channels": 16, "head_convs": 1,
                         "head_norm": "none", "score_threshold": 0.2, "max_detections": 300})
    with torch.no_grad():  # spread the scores (untrained heads give near-equal ones)
        model.head.cls_logits.weight.normal_(0.0, 0.5)
        model.head.cls_logits.bias.zero_()
    return model.eval()


def _thundernet(nms: str = "nms") -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model({"type": "thundernet_lite", "num_classes": 3, "score_threshold": 0.05,
                         "max_detections": 300, "nms": nms})
    with torch.no_grad():
        model.rcnn.head.cls_score.weight.normal_(0.0, 3.0)
        model.rcnn.head.bbox_pred.weight.normal_(0.0, 0.3)
    return model.eval()


def _assert_same(onnx_out: dict, torch_out: dict) -> None:
    """Same detections up to the order of equal-score ties: pair each ONNX detection with the
    closest PyTorch one of the same label (boxes within 1e-3 px, scores within 1e-5)."""
    ref = {k: v.numpy() for k, v in torch_out.items()}
    assert len(onnx_out["boxes"]) == len(ref["boxes"]) > 0
    free = np.ones(len(ref["boxes"]), dtype=bool)
    for box, score, label in zip(onnx_out["boxes"], onnx_out["scores"], onnx_out["labels"],
                                 strict=True):
        diff = np.abs(ref["boxes"] - box).max(axis=1)
        diff[~free | (ref["labels"] != label)] = np.inf
        j = int(np.argmin(diff))
        assert diff[j] <= 1e-3 and abs(ref["scores"][j] - score) <= 1e-5
        free[j] = False
    assert onnx_out["labels"].dtype == np.int64
    assert np.all(np.diff(onnx_out["scores"]) <= 1e-6)  # decreasing scores


@pytest.mark.parametrize("make", [_dense, _thundernet], ids=["dense", "thundernet"])
def test_onnxruntime_matches_pytorch(make, tmp_path: Path) -> None:
    model = make()
    path = export_onnx(model, tmp_path / "m.onnx", SIZE)
    assert not model.training
    for image in _images():
        with torch.no_grad():
            expected = model([image[0]])[0]
        _assert_same(run_onnxruntime(path, image), expected)


def test_diou_nms_model_exports_with_plain_nms_and_metadata(tmp_path: Path) -> None:
    import onnx

    model = _thundernet(nms="diou_nms")
    meta = describe_model("thundernet_lite", SIZE, ["a", "b", "c"])
    with pytest.warns(ExportWarning, match="ONNX has no diou_nms"):
        path = export_onnx(model, tmp_path / "t.onnx", SIZE, metadata=meta)
    assert model.rcnn.postprocess.nms == "diou_nms"  # the caller's model is unchanged
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert props["class_names"] == ["a", "b", "c"] and props["img_size"] == SIZE
    image = _images()[1]
    plain = _thundernet(nms="nms")
    with torch.no_grad():
        expected = plain([image[0]])[0]
    _assert_same(run_onnxruntime(path, image), expected)


def test_wrapper_checks_and_match_helper() -> None:
    wrapper = OnnxDetector(_dense())
    with pytest.raises(ValueError, match=r"\[1, 3, H, W\]"):
        wrapper(torch.rand(3, SIZE, SIZE))
    a = {"boxes": np.array([[0, 0, 10, 10], [5, 5, 9, 9]], float), "labels": np.array([1, 2])}
    swapped = {"boxes": a["boxes"][::-1] + 5e-4, "labels": a["labels"][::-1]}
    assert match_detections(a, swapped) == (True, pytest.approx(5e-4))
    relabeled = {"boxes": a["boxes"], "labels": np.array([2, 1])}
    assert match_detections(a, relabeled)[0] is False
    with pytest.raises(ValueError, match="img_size"):
        export_onnx(_dense(), "unused.onnx", 16)


def test_metadata_records_preprocessing_and_nms(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    import onnx

    from detkit.engine.export import check_onnxruntime, exportable_copy

    model = _thundernet(nms="diou_nms")
    with pytest.warns(ExportWarning) as record:
        plain = exportable_copy(model)
    meta = describe_model("thundernet_lite", SIZE, ["a", "b", "c"], model)
    path = export_onnx(model, tmp_path / "m.onnx", SIZE, metadata=meta, plain_nms=plain)
    assert len([w for w in record if issubclass(w.category, ExportWarning)]) == 1
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    pre = props["preprocessing"]
    assert pre["letterbox_size"] == SIZE and "INTER_LINEAR" in pre["interpolation"]
    assert pre["normalisation_in_graph"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert props["nms"]["configured"] == "diou_nms"
    assert props["nms"]["exported"].startswith("nms")
    assert props["box_format"].startswith("xyxy")
    # the check runs on the first image with a PyTorch detection
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 40, 3), np.uint8),
              rng.integers(0, 256, (48, 80, 3), np.uint8)]
    check = check_onnxruntime(path, plain, images, SIZE)
    assert check.image_index == 0 and check.num_torch > 0 and check.matched
    assert check.num_ort == check.num_torch and check.max_box_diff < 1e-3
    # nothing scores 1.0: no image has a detection, the last one is compared (0 vs 0)
    from detkit.engine.inference import with_postprocess

    silent = with_postprocess(plain, score_threshold=1.0)
    path = export_onnx(silent, tmp_path / "silent.onnx", SIZE)
    check = check_onnxruntime(path, silent, images, SIZE)
    assert (check.image_index, check.num_torch, check.num_ort) == (1, 0, 0)


def test_readme_onnxruntime_snippet_reproduces_predict(tmp_path: Path) -> None:
    """The README's onnxruntime snippet, run as written on an exported checkpoint, gives
    detkit.load(...).predict's boxes (within 1e-3 px) and labels."""
    import re

    import cv2

    import detkit
    from detkit.config import load_config
    from detkit.engine.checkpoint import atomic_save
    from detkit.engine.export import export_checked

    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"device": "cpu", "data": {"img_size": SIZE, "synthetic": {
        "enabled": True, "out_dir": str(tmp_path / "syn"), "num_images": 4, "image_size": 48}},
        "model": {"type": "dense_detector", "backbone": "plain_cnn", "neck": "fpn",
                  "neck_channels": 16, "head_convs": 1, "head_norm": "none"}}))
    cfg = load_config(config)
    torch.manual_seed(0)
    model = _dense_from(cfg)
    ckpt = atomic_save({"model": model.state_dict(), "config": cfg}, tmp_path / "best.pth")
    onnx_path = tmp_path / "model.onnx"
    export_checked(cfg, ckpt, onnx_path)
    rng = np.random.default_rng(3)
    image_path = tmp_path / "image.png"
    cv2.imwrite(str(image_path), rng.integers(0, 256, (50, 90, 3), dtype=np.uint8))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = re.search(r"### ONNX.*?```python\n(.*?)```", readme, re.S).group(1)
    snippet = snippet.replace('"model.onnx"', repr(str(onnx_path)))
    snippet = snippet.replace('"image.jpg"', repr(str(image_path)))
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the documented code
    pred = detkit.load(ckpt).predict(image_path)[0]
    assert len(pred) > 0
    np.testing.assert_allclose(scope["boxes"], pred.boxes, atol=1e-3)
    assert scope["names"] == pred.class_names


def _dense_from(cfg: dict) -> torch.nn.Module:
    from detkit.engine.build import build_model_from_cfg
    from detkit.engine.inference import class_names_from_config

    model = build_model_from_cfg(cfg["model"], len(class_names_from_config(cfg)))
    with torch.no_grad():  # spread the scores so that several pass 0.3
        model.head.cls_logits.weight.normal_(0.0, 0.3)
        model.head.cls_logits.bias.zero_()
    return model
