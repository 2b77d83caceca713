"""tools/test.py: EMA weights, COCO metrics equal to pycocotools', files, empty predictions."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.config import load_config
from detkit.data.coco import CocoDetection
from detkit.data.synthetic import generate_synthetic_coco
from detkit.data.transforms import build_transforms
from detkit.engine.build import build_model_from_cfg
from detkit.engine.checkpoint import atomic_save

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "test.py"
CAT_OFFSET = 10  # category ids 1..6 become 11..16 (labels stay 1..6)


def _load_tool():
    spec = importlib.util.spec_from_file_location("detkit_test_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _make_case(tmp_path: Path) -> tuple[Path, Path, dict]:
    """Synthetic data (3 val images, 64 px, shifted category ids), config and checkpoint.

    The checkpoint's EMA weights differ from its raw weights: their classification bias is 0
    (scores near sigmoid(0) = 0.5, many detections) instead of log(0.01 / 0.99) = -4.6 (scores
    near 0.01, below the 0.05 default threshold: no detections).
    """
    paths = generate_synthetic_coco(tmp_path / "data", num_images=5, image_size=64, seed=0,
                                    split_fractions={"train": 0.4, "val": 0.6})
    for path in paths.values():
        coco = json.loads(path.read_text())
        for cat in coco["categories"]:
            cat["id"] += CAT_OFFSET
        for ann in coco["annotations"]:
            ann["category_id"] += CAT_OFFSET
        path.write_text(json.dumps(coco))
    data = {"train": {"ann_file": str(paths["train"]), "img_dir": str(tmp_path / "data")},
            "val": {"ann_file": str(paths["val"]), "img_dir": str(tmp_path / "data")},
            "img_size": 64, "num_workers": 0}
    raw = {"device": "cpu", "data": data, "eval": {"batch_size": 2},
           "model": {"type": "dense_detector", "backbone": "snet49", "neck": "fpn",
                     "neck_channels": 16, "head_convs": 1, "head_norm": "none"}}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg["model"], 6)
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    ema["head.cls_logits.bias"] = torch.zeros_like(ema["head.cls_logits.bias"])
    ckpt_path = tmp_path / "work" / "last.pth"
    atomic_save({"model": model.state_dict(), "ema": {"module": ema, "updates": 3},
                 "config": cfg}, ckpt_path)
    return config, ckpt_path, ema


def _run(tool, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tool.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _pycocotools_stats(ann_file: Path, results: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_evaluates_ema_weights_and_writes_files(tmp_path: Path) -> None:
    config, ckpt, ema = _make_case(tmp_path)
    tool = _load_tool()
    code, out, err = _run(tool, str(config), str(ckpt), "model.score_threshold=0.3")
    assert code == 0, err
    folder = ckpt.parent / "eval_val"  # default output folder
    for name in ("metrics.json", "detections.json", "pr_curves.png", "per_class_ap.png"):
        assert (folder / name).is_file() and str(folder / name) in out
    assert "(ema weights)" in out and "class" in out and "APm" in out
    dets = json.loads((folder / "detections.json").read_text())
    assert dets and {d["category_id"] for d in dets} <= set(range(11, 17))

    # Reference: the EMA model on the training pipeline's letterboxed images, boxes / img_scale.
    cfg = load_config(config, ["model.score_threshold=0.3"])
    model = build_model_from_cfg(cfg["model"], 6)
    model.load_state_dict(ema)
    model.eval()
    val = CocoDetection(cfg["data"]["val"]["ann_file"], cfg["data"]["val"]["img_dir"],
                        build_transforms(None, 64, train=False))
    image, target = val[0]
    with torch.no_grad():
        expected = model([image])[0]
    mine = [d for d in dets if d["image_id"] == target["image_id"]]
    assert len(mine) == len(expected["boxes"]) > 0
    x1y1 = (expected["boxes"][0, :2] / target["img_scale"]).tolist()
    assert mine[0]["bbox"][:2] == pytest.approx(x1y1, abs=1e-4)
    assert mine[0]["score"] == pytest.approx(float(expected["scores"][0]), abs=1e-6)
    assert mine[0]["category_id"] == int(expected["labels"][0]) + CAT_OFFSET

    metrics = json.loads((folder / "metrics.json").read_text())
    stats = _pycocotools_stats(Path(cfg["data"]["val"]["ann_file"]), dets)
    for key, value in zip(("AP", "AP50", "AP75"), stats[:3], strict=True):
        assert metrics[key] == pytest.approx(value, abs=1e-9)
    assert set(metrics["per_class"]) == {"circle", "square", "triangle", "star", "ellipse",
                                          "cross"}


def test_no_detections_gives_zero_ap_and_warning(tmp_path: Path) -> None:
    config, ckpt, _ = _make_case(tmp_path)
    tool = _load_tool()
    with pytest.warns(UserWarning, match="no detections to evaluate"):
        code, out, _ = _run(tool, str(config), str(ckpt), "--out", str(tmp_path / "o"),
                            "model.score_threshold=0.999")
    assert code == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0
    assert json.loads((tmp_path / "o" / "detections.json").read_text()) == []


def test_raw_weights_and_config_errors(tmp_path: Path) -> None:
    config, ckpt, _ = _make_case(tmp_path)
    tool = _load_tool()
    with pytest.warns(UserWarning, match="no detections to evaluate"):
        code, out, _ = _run(tool, str(config), str(ckpt), "--no-ema", "--out",
                            str(tmp_path / "r"))
    assert code == 0 and "(model weights)" in out
    # raw head: prior 0.01 -> every score ~0.01 < the 0.05 default threshold: no detections
    assert "0 detections" in out
    code, _, err = _run(tool, str(config), str(ckpt), "data.img_size=big")
    assert code == 2 and "'data.img_size' expects int, got str 'big'" in err
    # an annotation file that is not there: one line naming it, no traceback
    gone = tmp_path / "gone.json"
    code, _, err = _run(tool, str(config), str(ckpt), f"test.ann_file={gone}")
    assert code == 2 and str(gone) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_pyramid_options_from_the_test_section(tmp_path: Path) -> None:
    config, ckpt, _ = _make_case(tmp_path)
    val = tmp_path / "data" / "val.json"
    code, out, err = _run(_load_tool(), str(config), str(ckpt), "model.score_threshold=0.3",
                          f"test.ann_file={val}", f"test.img_dir={tmp_path / 'data'}",
                          "test.scales=[48,64]", "test.nms=soft_nms", "test.max_detections=40",
                          "test.extra_area_ranges={tiny: [0, 64]}")
    assert code == 0, err
    assert "on test split" in out and "input 48x64, pyramid merged by soft_nms" in out
    folder = ckpt.parent / "eval_test"  # not "test_test"
    dets = json.loads((folder / "detections.json").read_text())
    per_image = {d["image_id"]: 0 for d in dets}
    for d in dets:
        per_image[d["image_id"]] += 1
        x, y, w, h = d["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 64 + 1e-4 and y + h <= 64 + 1e-4
    assert 0 < max(per_image.values()) <= 40
    metrics = json.loads((folder / "metrics.json").read_text())
    stats = _pycocotools_stats(val, dets)
    assert metrics["AP"] == pytest.approx(stats[0], abs=1e-9) and "AP_tiny" in metrics


def test_sliced_inference_from_the_test_section(tmp_path: Path) -> None:
    import cv2

    import detkit

    config, ckpt, _ = _make_case(tmp_path)
    common = [str(config), str(ckpt), "model.score_threshold=0.3"]
    code, plain_out, err = _run(_load_tool(), *common, "--out", str(tmp_path / "plain"))
    assert code == 0, err
    # 64 x 64 images, 32-px windows sharing half a side: x and y starts 0, 16, 32 -> nine
    # windows, plus the whole image
    code, out, err = _run(_load_tool(), *common, "test.tile=32", "test.tile_overlap=0.5",
                          "--out", str(tmp_path / "sliced"))
    assert code == 0, err
    assert "sliced: 32-px windows (50% overlap) + the whole image" in out
    dets = json.loads((tmp_path / "sliced" / "detections.json").read_text())
    plain = json.loads((tmp_path / "plain" / "detections.json").read_text())
    assert [d["bbox"] for d in dets] != [d["bbox"] for d in plain]  # the option acts
    # Reference for the first val image: the Python API's sliced prediction, same settings
    coco = json.loads((tmp_path / "data" / "val.json").read_text())
    info = coco["images"][0]
    image = cv2.cvtColor(cv2.imread(str(tmp_path / "data" / info["file_name"])),
                         cv2.COLOR_BGR2RGB)
    det = detkit.load(ckpt, config, ["model.score_threshold=0.3"])
    ref = det.predict(image, tile=32, tile_overlap=0.5, score_threshold=0.0)[0]
    mine = sorted((d for d in dets if d["image_id"] == info["id"]), key=lambda d: -d["score"])
    assert len(mine) == len(ref) > 0
    for d, box, score in zip(mine, ref.boxes, ref.scores, strict=True):
        x1, y1, x2, y2 = box.tolist()
        assert d["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=1e-4)
        assert d["score"] == pytest.approx(float(score), abs=1e-6)


def test_two_stage_model_writes_proposal_recall_and_gt_roi_scores(tmp_path: Path) -> None:
    config, _, _ = _make_case(tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["model"] = {"type": "thundernet_lite", "backbone": "snet49"}
    config.write_text(yaml.safe_dump(raw))
    cfg = load_config(config)
    torch.manual_seed(0)
    ckpt = tmp_path / "tn" / "last.pth"
    atomic_save({"model": build_model_from_cfg(cfg["model"], 6).state_dict(), "config": cfg},
                ckpt)
    code, out, err = _run(_load_tool(), str(ckpt))
    assert code == 0, err
    folder = ckpt.parent / "eval_val"
    val = json.loads(Path(raw["data"]["val"]["ann_file"]).read_text())
    names = {c["id"]: c["name"] for c in val["categories"]}
    per_class: dict[str, int] = {}
    for ann in val["annotations"]:
        per_class[names[ann["category_id"]]] = per_class.get(names[ann["category_id"]], 0) + 1
    recall = json.loads((folder / "proposal_recall.json").read_text())
    scores = json.loads((folder / "gt_roi_scores.json").read_text())
    # every ground-truth box of the val split is counted once by both diagnostics
    assert recall["all"]["total"] == len(val["annotations"]) == scores["all"]["boxes"]
    assert {k: v["boxes"] for k, v in scores["by_class"].items()} == per_class
    for entry in scores["by_class"].values():
        assert 0.0 <= entry["p_true"] <= 1.0 - entry["p_background"] + 1e-6
    assert "R-CNN on the ground-truth boxes as RoIs:" in out
