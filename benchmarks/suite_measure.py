"""Measurements of the benchmark suite (benchmarks/suite.py).

Training log summaries, inference latency (batch 1, 2 threads, median), time spent in the
final NMS, PR curves and drawn detections from a COCO results file, anchor coverage.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DRAWN_IMAGES = 3
DRAW_SCORE = 0.3


def read_log(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train records, eval records) of a trainer's log.jsonl."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return ([r for r in records if r.get("kind") == "train"],
            [r for r in records if r.get("kind") == "eval"])


def curves_from_log(path: Path) -> dict[str, list[list[float]]]:
    """Training curves: ``loss`` [[iter, total loss]], ``val`` [[iter, AP, AP50]]."""
    train, evals = read_log(path)
    return {"loss": [[r["iter"], r["loss"]] for r in train if r.get("loss") is not None],
            "val": [[r["iter"], r.get("AP"), r.get("AP50")] for r in evals]}


def median_images_per_s(path: Path) -> float:
    """Median logged training throughput (the first record, with start-up cost, left out)."""
    train, _ = read_log(path)
    values = [r["images_per_s"] for r in train[1:] or train if r.get("images_per_s")]
    return float(statistics.median(values)) if values else float("nan")


def _load(cfg: Mapping[str, Any], checkpoint: Path, ann_file: Path, img_dir: Path,
          nms: str | None = None) -> tuple[Any, Any]:
    """(model in eval mode on CPU, the CocoDetection of ``ann_file`` with raw images)."""
    from detkit.data.coco import CocoDetection
    from detkit.engine.inference import TestOptions, keep_raw, load_detector

    dataset = CocoDetection(str(ann_file), str(img_dir), transforms=keep_raw)
    options = TestOptions(img_size=cfg["data"]["img_size"], nms=nms)
    loaded = load_detector(cfg, checkpoint, dataset.num_classes, "cpu", options)
    return loaded.model, dataset


def inference_latency(cfg: Mapping[str, Any], checkpoint: Path, ann_file: Path, img_dir: Path,
                      runs: int = 20, threads: int = 2) -> float:
    """Median milliseconds of one forward pass of the trained model on the first image of
    ``ann_file``, batch 1, 320 letterbox, ``threads`` threads (post-processing included: the
    trained model's own candidates reach its NMS)."""
    import torch

    from detkit.engine.inference import letterbox_image

    model, dataset = _load(cfg, checkpoint, ann_file, img_dir)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        image, _ = letterbox_image(dataset[0][0], 320)
        times = []
        with torch.no_grad():
            for i in range(runs + 3):
                start = time.perf_counter()
                model([image])
                if i >= 3:  # three warm-up passes
                    times.append(1000.0 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(before)
    return float(statistics.median(times))


@contextmanager
def timed_nms() -> Iterator[list[float]]:
    """Patch ``detkit.models.postprocess.run_nms`` to record each call's seconds."""
    from detkit.models import postprocess

    original = postprocess.run_nms
    seconds: list[float] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = original(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
        return out

    postprocess.run_nms = timed
    try:
        yield seconds
    finally:
        postprocess.run_nms = original


def nms_milliseconds(cfg: Mapping[str, Any], checkpoint: Path, ann_file: Path, img_dir: Path,
                     kind: str, threads: int = 2) -> float:
    """Mean milliseconds per image of ``ann_file`` spent in the final NMS of ``kind`` (batch 1;
    one warm-up image first, so a kernel's one-off loading is not charged to the kind)."""
    import torch

    from detkit.engine.inference import Predictor

    model, dataset = _load(cfg, checkpoint, ann_file, img_dir, nms=kind)
    predictor = Predictor(model, [cfg["data"]["img_size"]])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        predictor.predict([dataset[0][0]])
        with timed_nms() as seconds:
            for i in range(len(dataset)):
                predictor.predict([dataset[i][0]])
    finally:
        torch.set_num_threads(before)
    return 1000.0 * sum(seconds) / max(len(dataset), 1)


def pr_and_drawn(gt: Mapping[str, Any], dets: list[dict[str, Any]]) -> dict[str, Any]:
    """PR curves per class (IoU .50 and mean .50:.95) and the detections of three images."""
    from detkit.evaluation import evaluate_detections
    from detkit.evaluation.plots import pr_curves

    result = evaluate_detections(gt, dets)
    curves = {}
    for name, (rec, prec50) in pr_curves(result, 0.5).items():
        mean = pr_curves(result, None).get(name, (rec, prec50))[1]
        curves[name] = {"recall": rec.tolist(), "precision50": prec50.tolist(),
                        "precision": mean.tolist()}
    ids = sorted(img["id"] for img in gt["images"])[:DRAWN_IMAGES]
    drawn = {str(i): [d for d in dets if d["image_id"] == i and d["score"] >= DRAW_SCORE]
             for i in ids}
    return {"pr_curves": curves, "drawn_detections": drawn}


def anchor_coverage_rows(cfg: Mapping[str, Any], ann_file: Path) -> list[dict[str, Any]] | None:
    """Anchor coverage of the objects of ``ann_file`` at the row's input size (dense detectors
    and the ThunderNet RPN; None for the torchvision peers)."""
    if cfg["model"]["type"] not in ("dense_detector", "thundernet_lite"):
        return None
    from detkit.engine.build import build_model_from_cfg
    from detkit.models.coverage import anchor_coverage, model_anchor_generator

    coco = json.loads(Path(ann_file).read_text())
    model = build_model_from_cfg(cfg["model"], len(coco["categories"]))
    report = anchor_coverage(coco, model_anchor_generator(model), cfg["data"]["img_size"])
    return [{"bucket": r.bucket, "class": r.class_name, "boxes": r.count,
             "coverage": r.coverage, "mean_best_iou": r.mean_best_iou,
             "num_anchors": report.num_anchors} for r in report.rows]


