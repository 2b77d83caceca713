"""tools/infer.py: drawn images and per-image JSON in original pixels, input checks."""

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
import yaml

from detkit.config import load_config
from detkit.data.transforms import letterbox
from detkit.engine.build import build_model_from_cfg
from detkit.engine.checkpoint import atomic_save

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "infer.py"
NAMES = ["cell", "dot"]


def _load_tool():
    spec = importlib.util.spec_from_file_location("detkit_infer_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tool, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tool.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _make_case(tmp_path: Path) -> tuple[Path, Path, dict, Path]:
    """Config naming 2 classes (ids 5, 9), an EMA checkpoint, and two images of different
    sizes (96x64 PNG, 48x48 JPEG) in a folder."""
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({"images": [], "annotations": [],
                               "categories": [{"id": 9, "name": "dot"},
                                              {"id": 5, "name": "cell"}]}))
    raw = {"device": "cpu", "data": {"val": {"ann_file": str(ann)}, "img_size": 64},
           "model": {"type": "dense_detector", "backbone": "snet49", "neck": "fpn",
                     "neck_channels": 16, "head_convs": 1, "head_norm": "none"}}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg["model"], 2)
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    ema["head.cls_logits.bias"] = torch.zeros_like(ema["head.cls_logits.bias"])  # scores ~0.5
    ckpt = atomic_save({"model": model.state_dict(), "ema": {"module": ema, "updates": 1},
                        "config": cfg}, tmp_path / "w" / "best.pth")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "wide.png"), rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    cv2.imwrite(str(images / "small.jpg"), rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    (images / "notes.txt").write_text("not an image")
    return config, ckpt, ema, images


def test_folder_gives_drawn_images_and_json_in_original_pixels(tmp_path: Path) -> None:
    config, ckpt, ema, images = _make_case(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = _run(_load_tool(), str(config), str(ckpt), str(images), "--out",
                             str(out), "--score-threshold", "0.4")
    assert code == 0, err
    assert "2 images" in stdout and "(ema weights)" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["small.jpg", "small.json", "wide.json",
                                                     "wide.png"]
    # drawn enlarged for readable captions: factor ceil(512 / 96) = 6 -> 384 x 576
    assert cv2.imread(str(out / "wide.png")).shape == (384, 576, 3)
    record = json.loads((out / "wide.json").read_text())
    assert (record["height"], record["width"]) == (64, 96)
    assert set(record["class_names"]) <= set(NAMES)
    assert all(NAMES[k - 1] == n for k, n in zip(record["labels"], record["class_names"],
                                                  strict=True))
    assert record["scores"] and min(record["scores"]) >= 0.4

    # Reference: the EMA model on the 64 px letterbox of the PNG; scale = min(64/64, 64/96)
    # = 2/3, so original boxes = boxes * 3/2, clipped to 96 x 64.
    cfg = load_config(config)
    model = build_model_from_cfg(cfg["model"], 2)
    model.load_state_dict(ema)
    model.eval()
    rgb = cv2.cvtColor(cv2.imread(str(images / "wide.png")), cv2.COLOR_BGR2RGB)
    canvas, info = letterbox(rgb, {}, 64)
    assert info["img_scale"] == pytest.approx(2 / 3)
    with torch.no_grad():
        det = model([torch.from_numpy(canvas.transpose(2, 0, 1).copy()).float() / 255.0])[0]
    keep = det["scores"] >= 0.4
    boxes = (det["boxes"][keep] * 1.5).clamp(min=0)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(max=96)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(max=64)
    assert np.allclose(record["boxes"], boxes.numpy(), atol=1e-3)
    assert record["labels"] == det["labels"][keep].tolist()


def test_single_file_and_bad_inputs(tmp_path: Path) -> None:
    config, ckpt, _, images = _make_case(tmp_path)
    tool = _load_tool()
    code, stdout, _ = _run(tool, str(config), str(ckpt), str(images / "small.jpg"), "--out",
                           str(tmp_path / "one"), "--score-threshold", "1.0")
    assert code == 0 and "1 images, 0 detections" in stdout
    assert json.loads((tmp_path / "one" / "small.json").read_text())["boxes"] == []
    # Raw weights: prior 0.01 gives scores near 0.01, under the model's own 0.05 threshold;
    # asking for >= 0.005 lowers the model's threshold so they are reported.
    code, _, _ = _run(tool, str(config), str(ckpt), str(images / "small.jpg"), "--out",
                      str(tmp_path / "low"), "--score-threshold", "0.005", "--no-ema")
    low = json.loads((tmp_path / "low" / "small.json").read_text())
    assert code == 0 and low["scores"] and 0.005 <= min(low["scores"]) <= max(low["scores"]) < 0.05
    code, _, err = _run(tool, str(config), str(tmp_path / "none.pth"), str(images), "--out", "o")
    assert code == 2 and "checkpoint not found" in err
    code, _, err = _run(tool, str(config), str(ckpt), str(images), "--out", str(images))
    assert code == 2 and "is the input folder" in err
    code, _, err = _run(tool, str(config), str(ckpt), str(tmp_path / "missing"), "--out", "o")
    assert code == 2 and "not found" in err
    (images / "wide.jpg").write_bytes((images / "small.jpg").read_bytes())
    code, _, err = _run(tool, str(config), str(ckpt), str(images), "--out", str(tmp_path / "x"))
    assert code == 2 and "share the name 'wide'" in err


@pytest.mark.faults
def test_an_undecodable_file_is_skipped_and_the_folder_finishes(tmp_path: Path) -> None:
    """Issue 13: the first undecodable file aborted the folder half done."""
    config, ckpt, _, images = _make_case(tmp_path)
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # sorts first
    out = tmp_path / "out"
    code, stdout, err = _run(_load_tool(), str(config), str(ckpt), str(images), "--out",
                             str(out))
    assert code == 1  # partial: said by the exit code, the file named on stderr
    assert "skipped" in err and "broken.jpg" in err and "1 unreadable file(s) skipped" in err
    assert "2 images" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["small.jpg", "small.json", "wide.json",
                                                     "wide.png"]


def test_tile_flag_slices_like_the_python_api(tmp_path: Path) -> None:
    import detkit

    config, ckpt, _, images = _make_case(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = _run(_load_tool(), str(config), str(ckpt), str(images / "wide.png"),
                             "--out", str(out), "--tile", "48", "--tile-overlap", "0.5")
    assert code == 0, err
    got = json.loads((out / "wide.json").read_text())
    # 96 x 64 at 48 px, overlap 0.5: x starts 0, 24, 48 and y starts 0, 16 -> six windows
    ref = detkit.load(ckpt, config).predict(images / "wide.png", tile=48, tile_overlap=0.5)[0]
    assert len(got["boxes"]) == len(ref) > 0
    np.testing.assert_allclose(np.asarray(got["boxes"]), ref.boxes, atol=1e-4)
    plain = detkit.load(ckpt, config).predict(images / "wide.png")[0]
    assert len(plain) != len(ref) or not np.allclose(plain.boxes, ref.boxes)  # the flag acts
    for bad in (["--tile", "-1"], ["--tile", "48", "--tile-overlap", "1.0"]):
        code, _, err = _run(_load_tool(), str(config), str(ckpt), str(images), "--out",
                            str(tmp_path / "bad"), *bad)
        assert code == 2 and "--tile" in err
