"""detkit.api: ``detkit.load(ckpt).predict(...)`` on every input kind, equal to tools/infer.py."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detkit
from detkit.config import load_config
from detkit.engine.build import build_model_from_cfg
from detkit.engine.checkpoint import atomic_save
from detkit.engine.inference import letterbox_image

REPO = Path(__file__).resolve().parents[1]


def _case(tmp_path: Path) -> tuple[Path, dict, torch.nn.Module, Path]:
    """A 2-class dense detector checkpoint whose stored config names the classes through an
    annotation file, and a folder with a 96x64 PNG and a 48x48 PNG."""
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({"images": [], "annotations": [],
                               "categories": [{"id": 4, "name": "cell"},
                                              {"id": 8, "name": "dot"}]}))
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({
        "device": "cpu", "data": {"val": {"ann_file": str(ann)}, "img_size": 64},
        "model": {"type": "dense_detector", "backbone": "plain_cnn", "neck": "fpn",
                  "neck_channels": 16, "head_convs": 1, "head_norm": "none"}}))
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg["model"], 2)
    with torch.no_grad():  # spread the scores so that some pass 0.3
        model.head.cls_logits.weight.normal_(0.0, 0.3)
        model.head.cls_logits.bias.zero_()
    ckpt = atomic_save({"model": model.state_dict(), "config": cfg}, tmp_path / "w" / "best.pth")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "a_wide.png"), rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    cv2.imwrite(str(images / "b_small.png"), rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    return ckpt, cfg, model.eval(), images


def test_predict_folder_equals_the_model_in_original_pixels(tmp_path: Path) -> None:
    ckpt, _, model, images = _case(tmp_path)
    det = detkit.load(ckpt)  # no CONFIG: the checkpoint's own
    assert det.names == ["cell", "dot"]
    preds = det.predict(images, score_threshold=0.3)
    assert [Path(p.source).name for p in preds] == ["a_wide.png", "b_small.png"]
    wide = cv2.cvtColor(cv2.imread(str(images / "a_wide.png")), cv2.COLOR_BGR2RGB)
    # Reference: the model on the 64 px letterbox; scale = min(64 / 64, 64 / 96) = 2/3, so
    # original boxes = boxes * 3/2, clipped to the 96 x 64 image.
    tensor, scale = letterbox_image(wide, 64)
    assert scale == pytest.approx(2 / 3)
    with torch.no_grad():
        ref = model([tensor])[0]
    keep = ref["scores"] >= 0.3
    boxes = (ref["boxes"][keep] * 1.5).numpy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, 96)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, 64)
    assert len(preds[0]) == int(keep.sum()) > 0
    np.testing.assert_allclose(preds[0].boxes, boxes, atol=1e-4)
    np.testing.assert_allclose(preds[0].scores, ref["scores"][keep].numpy(), atol=1e-6)
    assert preds[0].class_names == [["cell", "dot"][k - 1] for k in preds[0].labels]
    assert preds[0].image_size == (64, 96)


def test_every_input_kind_gives_the_same_numbers(tmp_path: Path) -> None:
    ckpt, _, _, images = _case(tmp_path)
    det = detkit.load(ckpt)
    path = images / "a_wide.png"
    array = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    by_path = det.predict(str(path))[0]
    by_array = det.predict(array)[0]
    by_uint8_tensor = det.predict(torch.from_numpy(array).permute(2, 0, 1))[0]
    by_float_tensor = det.predict(torch.from_numpy(array).permute(2, 0, 1).float() / 255)[0]
    by_list = det.predict([array, path], batch_size=1)
    for other in (by_array, by_uint8_tensor, by_float_tensor, *by_list):
        np.testing.assert_allclose(other.boxes, by_path.boxes, atol=1e-5)
        np.testing.assert_array_equal(other.labels, by_path.labels)
    assert by_array.source is None and by_list[1].source == str(path)
    # a COCO file lists images relative to its folder (as tools/convert_voc.py writes them)
    listing = tmp_path / "split.json"
    listing.write_text(json.dumps({"images": [{"id": 1, "file_name": "images/a_wide.png"}]}))
    np.testing.assert_allclose(det.predict(listing)[0].boxes, by_path.boxes, atol=1e-5)


def test_sliced_predict(tmp_path: Path) -> None:
    ckpt, _, _, images = _case(tmp_path)
    det = detkit.load(ckpt)
    small = images / "b_small.png"  # 48 x 48: one window, the image itself, no extra pass
    plain, one_window = det.predict(small)[0], det.predict(small, tile=64)[0]
    np.testing.assert_allclose(one_window.boxes, plain.boxes, atol=1e-5)
    np.testing.assert_array_equal(one_window.labels, plain.labels)
    # 96 x 64 at tile 48, overlap 0.5: x windows at 0, 24, 48; y at 0, 16; six windows
    from detkit.engine.slicing import SlicedPredictor

    wide = cv2.cvtColor(cv2.imread(str(images / "a_wide.png")), cv2.COLOR_BGR2RGB)
    sliced = det.predict(wide, tile=48, tile_overlap=0.5)[0]
    ref = SlicedPredictor.around(det._predictor, 48, 0.5).predict([wide])[0]
    keep = ref["scores"] >= 0.3
    np.testing.assert_allclose(sliced.boxes, ref["boxes"][keep].numpy(), atol=1e-5)
    assert len(sliced) > 0 and (sliced.boxes[:, 2] <= 96).all() and (sliced.boxes[:, 3] <= 64).all()


def test_same_json_as_tools_infer(tmp_path: Path) -> None:
    ckpt, _, _, images = _case(tmp_path)
    spec = importlib.util.spec_from_file_location("infer_tool", REPO / "tools" / "infer.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        assert tool.main([str(ckpt), str(images), "--out", str(out)]) == 0
    for pred in detkit.load(ckpt).predict(images):
        record = json.loads((out / f"{Path(pred.source).stem}.json").read_text())
        assert record == json.loads(json.dumps(pred.to_dict()))


def test_bad_inputs_fail_before_any_work(tmp_path: Path) -> None:
    ckpt, _, _, images = _case(tmp_path)
    det = detkit.load(ckpt)
    with pytest.raises(FileNotFoundError, match="not found: .*nowhere"):
        det.predict(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="uint8"):
        det.predict(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        det.predict(torch.zeros(8, 8, 3))
    with pytest.raises(TypeError, match="cannot predict on a int"):
        det.predict(3)
    with pytest.raises(ValueError, match="batch_size"):
        det.predict(images, batch_size=0)
    with pytest.raises(ValueError, match="empty list"):
        det.predict([])


def test_workers_and_runtimes_give_the_same_predictions(tmp_path: Path) -> None:
    ckpt, _, _, images = _case(tmp_path)
    det = detkit.load(ckpt)
    ref = det.predict(images, batch_size=1, score_threshold=0.3)
    by_workers = det.predict(images, batch_size=2, score_threshold=0.3, workers=2)
    assert [p.source for p in by_workers] == [p.source for p in ref]
    det.use_runtime("folded", 0.3)
    folded = det.predict(images, batch_size=2, score_threshold=0.3, workers=1)
    for a, b, c in zip(ref, by_workers, folded, strict=True):
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-5)
        np.testing.assert_allclose(c.boxes, a.boxes, atol=1e-3)
        np.testing.assert_array_equal(c.labels, a.labels)
    with pytest.raises(ValueError, match="unknown runtime"):
        det.use_runtime("tvm")
