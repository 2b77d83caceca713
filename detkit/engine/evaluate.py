"""The one evaluation path: batches -> detections -> COCO results -> COCO metrics.

The trainer's periodic evaluation (:func:`make_evaluator`, built by the recipe's
``build_evaluator`` seam) and ``tools/test.py`` (:func:`predict_dataset`) both run
:func:`collect_coco_results`: each rank predicts its shard of the images
(:class:`~detkit.data.sampling.ShardSampler`; every image once when not distributed), the
per-image detections become COCO results in original pixels with the dataset's category ids
(:func:`~detkit.evaluation.detections_to_coco_results`) and the ranks' lists are gathered.
They differ only in what turns a batch into detections:

* training: the validation transforms letterbox the images to tensors; the model's own
  forward gives boxes in letterboxed pixels, divided by the target's ``img_scale``;
* test: the dataset keeps raw uint8 images (:func:`~detkit.engine.inference.keep_raw`) and a
  :class:`~detkit.engine.inference.Predictor` letterboxes (one size or an image pyramid) and
  maps boxes back itself, so the scale is 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from detkit.data.sampling import ShardSampler
from detkit.engine import distributed as du

__all__ = ["collect_coco_results", "evaluation_loader", "make_evaluator", "predict_dataset"]

PredictFn = Callable[[Sequence[Any]], Sequence[Mapping[str, Tensor]]]
MetaFn = Callable[[Sequence[Any], Sequence[Mapping[str, Any]]], Sequence[Mapping[str, Any]]]


def evaluation_loader(dataset: Any, batch_size: int, num_workers: int = 0,
                      rank: int = 0, world_size: int = 1, collate_fn: Any = None) -> DataLoader:
    """Loader over this rank's shard of ``dataset`` in index order (no shuffling, no
    padding: with ``world_size`` ranks, rank r gets indices r, r + world_size, ...)."""
    if collate_fn is None:
        from detkit.data.collate import collate_detection as collate_fn
    return DataLoader(dataset, batch_size=batch_size,
                      sampler=ShardSampler(len(dataset), rank, world_size),
                      collate_fn=collate_fn, num_workers=num_workers)


def _targets_as_metas(images: Sequence[Any], targets: Sequence[Mapping[str, Any]]
                      ) -> Sequence[Mapping[str, Any]]:
    """The validation targets carry ``image_id``, ``img_scale`` and ``orig_size`` already."""
    return targets


@torch.no_grad()
def collect_coco_results(loader: Any, predict: PredictFn, label_to_cat_id: Any,
                         metas: MetaFn = _targets_as_metas) -> list[dict[str, Any]]:
    """COCO results (xywh, original pixels, dataset category ids) of every image, all ranks.

    Args:
        loader: yields ``(images, targets)`` batches (this rank's shard).
        predict: ``images -> [{"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,)}]`` per image.
        label_to_cat_id: contiguous label -> COCO category id (``dataset.label_to_cat_id``).
        metas: ``(images, targets) -> [{"image_id", "img_scale", "orig_size"}]``: how the
            predicted boxes map back to original pixels (default: the targets themselves).

    Returns the results of every rank (gathered; identity without torch.distributed).
    """
    from detkit.evaluation import all_gather_results, detections_to_coco_results

    results: list[dict[str, Any]] = []
    for images, targets in loader:
        outputs = [{k: v.cpu() for k, v in o.items()} for o in predict(images)]
        results.extend(detections_to_coco_results(outputs, metas(images, targets),
                                                  label_to_cat_id))
    return all_gather_results(results)


def make_evaluator(dataset: Any, cfg: Mapping[str, Any], info: du.DistInfo,
                   collate_fn: Any = None) -> Callable[[nn.Module], dict[str, float]]:
    """``evaluate(model) -> metrics`` for the trainer: :func:`collect_coco_results` with the
    model's forward over the validation transforms, COCO AP on rank 0, broadcast to all."""
    from detkit.evaluation import evaluate_detections

    loader = evaluation_loader(dataset, cfg["eval"]["batch_size"], cfg["data"]["num_workers"],
                               info.rank, info.world_size, collate_fn)

    def evaluate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            results = collect_coco_results(
                loader, lambda images: model([im.to(info.device) for im in images]),
                dataset.label_to_cat_id)
        finally:
            model.train(was_training)
        payload: list[Any] = [None]
        if du.is_main_process():
            res = evaluate_detections(dataset.coco.dataset, results)
            payload = [{k: float(v) for k, v in res.metrics.items()}]
        if du.is_dist():
            dist.broadcast_object_list(payload, src=0)
        return payload[0]

    return evaluate


def _raw_image_metas(images: Sequence[Any], targets: Sequence[Mapping[str, Any]]
                     ) -> list[dict[str, Any]]:
    """A Predictor returns boxes in original pixels already: scale 1, clipped to the image."""
    return [{"image_id": t["image_id"], "img_scale": 1.0, "orig_size": img.shape[:2]}
            for img, t in zip(images, targets, strict=True)]


def predict_dataset(predictor: Any, dataset: Any, batch_size: int = 8, num_workers: int = 0,
                    rank: int = 0, world_size: int = 1) -> list[dict[str, Any]]:
    """COCO results (original category ids, original pixels) of every image of ``dataset``.

    ``dataset`` is a :class:`detkit.data.coco.CocoDetection` built with
    ``transforms=keep_raw`` (items are uint8 HxWx3 RGB image, numpy target) and ``predictor``
    a :class:`~detkit.engine.inference.Predictor`; the same loop as the trainer's evaluation.
    """
    loader = evaluation_loader(dataset, batch_size, num_workers, rank, world_size)
    return collect_coco_results(loader, predictor.predict, dataset.label_to_cat_id,
                                _raw_image_metas)
