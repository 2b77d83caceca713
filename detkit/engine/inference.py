"""Inference with a trained detector: load config + checkpoint, predict, image pyramid.

The steps behind ``tools/test.py`` and ``tools/infer.py``:

1. :func:`load_detector` builds the model of a config's ``model`` section, loads the
   checkpoint's EMA weights when present (else the raw ones) and applies the test-time
   post-processing (:func:`with_postprocess`: NMS kind, IoU / score thresholds, max detections).
2. :class:`Predictor` letterboxes original uint8 RGB images to one or several square sizes
   (the same :func:`detkit.data.transforms.letterbox` as evaluation during training), runs the
   model, maps boxes back to original pixels (``box / img_scale``, clipped to the image) and,
   with several sizes (an image pyramid), merges all scales' detections per class with
   :func:`detkit.ops.nms.batched_nms_by_kind` (:func:`merge_detections`); with SNIP's
   ``test.valid_ranges`` each scale first keeps only the detections whose size lies in its
   range (:func:`detkit.models.snip.keep_in_valid_range`).
3. :func:`detkit.engine.evaluate.predict_dataset` runs it over a COCO dataset (the same
   loop as the trainer's evaluation) and returns COCO results with the dataset's original
   category ids.

Test-time settings come from the config's ``test`` section (:func:`read_test_options`);
every key is read with a default, so configs without that section keep working.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from detkit.evaluation.coco import check_eval_options
from detkit.models.postprocess import PostprocessConfig
from detkit.models.snip import keep_in_valid_range, valid_range_of
from detkit.ops.boxes import clip_boxes_to_image
from detkit.ops.nms import batched_nms_by_kind

__all__ = [
    "LoadedDetector",
    "Predictor",
    "TestOptions",
    "class_names_from_config",
    "keep_raw",
    "letterbox_image",
    "load_detector",
    "merge_detections",
    "postprocess_config",
    "read_test_options",
    "rescale_detections",
    "state_dict_from_checkpoint",
    "with_postprocess",
]

DETECTION_KEYS = ("boxes", "scores", "labels")


@dataclasses.dataclass(frozen=True)
class TestOptions:
    """Test-time settings (the config's ``test`` section, with defaults filled in).

    Attributes:
        ann_file / img_dir: evaluation split; None means ``data.val``.
        img_size: square letterbox size of single-scale testing (pixels).
        scales: image-pyramid sizes; empty = single scale at ``img_size``.
        valid_ranges: SNIP's ``(min, max)`` detection size per entry of ``scales``; empty =
            keep every detection.
        nms / iou_threshold / score_threshold / max_detections / class_agnostic_nms:
            post-processing overrides (None keeps the model's own setting).
        tile / tile_overlap: sliced inference (:mod:`detkit.engine.slicing`): ``tile``-px
            windows sharing ``tile_overlap`` of their side, plus the whole image; None = off.
        extra_area_ranges: extra COCO area buckets {name: (min, max)} in pixels^2.
        max_dets: the three COCO detection limits.
    """

    __test__ = False  # not a pytest test class despite the name

    ann_file: str | None = None
    img_dir: str | None = None
    img_size: int = 512
    scales: tuple[int, ...] = ()
    valid_ranges: tuple[tuple[float, float], ...] = ()
    nms: str | None = None
    iou_threshold: float | None = None
    score_threshold: float | None = None
    max_detections: int | None = None
    class_agnostic_nms: bool | None = None
    tile: int | None = None
    tile_overlap: float = 0.25
    extra_area_ranges: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    max_dets: tuple[int, ...] = (1, 10, 100)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The input sizes to run: the pyramid ``scales``, else ``(img_size,)``."""
        return self.scales or (self.img_size,)


def read_test_options(cfg: Mapping[str, Any]) -> TestOptions:
    """Read ``cfg["test"]`` (missing keys take defaults; ``img_size`` None -> data.img_size).

    The section is validated by the config schema (:func:`detkit.config.validate_section`:
    NMS kind, sizes, thresholds in [0, 1], ...); then ``max_dets`` / ``extra_area_ranges``
    by the evaluation's own check. Raises ValueError (ConfigError) naming the key.
    """
    from detkit.config import validate_section

    test = validate_section(cfg, "test")
    size = test["img_size"] or cfg.get("data", {}).get("img_size", 512)
    scales = tuple(test["scales"])
    nms = test["nms"]
    max_det = test["max_detections"]
    try:
        areas = {str(k): (float(v[0]), float(v[1]))
                 for k, v in (test.get("extra_area_ranges") or {}).items()}
    except (TypeError, ValueError, IndexError, KeyError):
        raise ValueError(f"test.extra_area_ranges must map names to [min_area, max_area], got "
                         f"{test.get('extra_area_ranges')!r}") from None
    max_dets = tuple(test.get("max_dets") or (1, 10, 100))
    try:  # checked before any inference (issue 13: they failed after it)
        check_eval_options(max_dets, areas)
    except (TypeError, ValueError) as err:
        raise ValueError(f"test.max_dets / test.extra_area_ranges: {err}") from None
    return TestOptions(
        ann_file=test.get("ann_file"), img_dir=test.get("img_dir"), img_size=int(size),
        scales=scales, nms=nms, valid_ranges=tuple(
            (float(lo), float(hi)) for lo, hi in test.get("valid_ranges") or ()),
        iou_threshold=None if test.get("iou_threshold") is None else float(test["iou_threshold"]),
        score_threshold=(None if test.get("score_threshold") is None
                         else float(test["score_threshold"])),
        max_detections=None if max_det is None else int(max_det),
        class_agnostic_nms=test["class_agnostic_nms"], extra_area_ranges=areas,
        tile=None if test["tile"] is None else int(test["tile"]),
        tile_overlap=float(test["tile_overlap"]),
        max_dets=tuple(int(m) for m in max_dets))


# ----------------------------------------------------------------- post-processing settings
def postprocess_config(model: nn.Module) -> PostprocessConfig:
    """The model's current post-processing settings (score threshold, NMS kind, ...), read
    through the detector protocol (:mod:`detkit.models.detectors.protocol`)."""
    from detkit.models.detectors.protocol import as_detector

    return as_detector(model).postprocess_settings()


def with_postprocess(model: nn.Module, nms: str | None = None,
                     iou_threshold: float | None = None, score_threshold: float | None = None,
                     max_detections: int | None = None,
                     class_agnostic_nms: bool | None = None) -> nn.Module:
    """A deep copy of ``model`` whose final post-processing uses the given settings.

    None keeps the model's own value. ``model`` itself is not modified. Works for every
    detector of the protocol and, through its adapter, torchvision's (plain NMS only).
    """
    from detkit.models.detectors.protocol import replace_postprocess

    changes = {k: v for k, v in (("nms", nms), ("nms_threshold", iou_threshold),
                                 ("score_threshold", score_threshold),
                                 ("max_detections", max_detections),
                                 ("class_agnostic_nms", class_agnostic_nms)) if v is not None}
    out = copy.deepcopy(model)
    if changes:
        replace_postprocess(out, **changes)
    return out


# ----------------------------------------------------------------- loading
@dataclasses.dataclass
class LoadedDetector:
    """A model ready for inference: eval mode, on its device, test-time post-processing.

    ``weights`` is "ema" or "model" (which checkpoint entry was loaded).
    """

    model: nn.Module
    weights: str
    num_classes: int
    device: torch.device


def state_dict_from_checkpoint(ckpt: Mapping[str, Any], prefer_ema: bool = True
                               ) -> tuple[dict[str, Tensor], str]:
    """(state dict, "ema" | "model"): the EMA weights when present and wanted, else ``model``."""
    ema = ckpt.get("ema")
    if prefer_ema and isinstance(ema, Mapping) and "module" in ema:
        return dict(ema["module"]), "ema"
    if "model" not in ckpt:
        raise KeyError(f"checkpoint has no 'model' entry (keys: {sorted(ckpt)})")
    return dict(ckpt["model"]), "model"


def _read_categories(ann_file: str | Path) -> list[str]:
    """Category names of a COCO JSON file, sorted by id (label k is the k-th)."""
    data = json.loads(Path(ann_file).read_text())
    cats = sorted(data.get("categories", []), key=lambda c: c["id"])
    if not cats:
        raise ValueError(f"{ann_file} has no categories")
    return [str(c.get("name", c["id"])) for c in cats]


def class_names_from_config(cfg: Mapping[str, Any],
                            checkpoint: Mapping[str, Any] | None = None) -> list[str]:
    """Class names (label k -> names[k - 1]) from the first annotation file the config names.

    Looks at ``test.ann_file``, ``data.val.ann_file``, ``data.train.ann_file``, then (synthetic
    data) the generated ``val.json`` or :data:`detkit.data.synthetic.CLASSES`, then the
    ``class_names`` a loaded ``checkpoint`` dict stores (written by the trainer). Only the
    ``categories`` list is read, no image. Raises ValueError when nothing names the classes.
    """
    data = cfg.get("data", {})
    candidates = [(cfg.get("test") or {}).get("ann_file"),
                  (data.get("val") or {}).get("ann_file"),
                  (data.get("train") or {}).get("ann_file")]
    synthetic = data.get("synthetic") or {}
    if synthetic.get("enabled"):
        candidates.insert(0, str(Path(synthetic.get("out_dir", "")) / "val.json"))
    for path in candidates:
        if path and Path(path).is_file():
            return _read_categories(path)
    if synthetic.get("enabled"):  # not generated here: the names the config asks for
        from detkit.data.synthetic import CLASSES

        return list(synthetic.get("classes") or CLASSES)
    stored = checkpoint.get("class_names") if checkpoint else None
    if stored:
        return [str(n) for n in stored]
    raise ValueError("cannot find the class names: none of test.ann_file, data.val.ann_file, "
                     "data.train.ann_file exists and the checkpoint stores none (checkpoints "
                     "written before class names were stored); pass an annotation file, e.g. "
                     "test.ann_file=PATH.json")


def load_detector(cfg: Mapping[str, Any], checkpoint: str | Path | Mapping[str, Any],
                  num_classes: int, device: str | torch.device = "cpu",
                  options: TestOptions | None = None, prefer_ema: bool = True
                  ) -> LoadedDetector:
    """Build ``cfg["model"]`` for ``num_classes``, load weights, set test-time post-processing.

    ``checkpoint`` is a path (read with ``weights_only=True``) or an already loaded dict with
    ``model`` and optional ``ema`` ({"module": state dict}). Raises ValueError when the
    checkpoint's tensors do not fit the model built from the config.
    """
    from detkit.engine.build import build_model_from_cfg
    from detkit.engine.checkpoint import as_checkpoint

    ckpt = as_checkpoint(checkpoint)
    state, source = state_dict_from_checkpoint(ckpt, prefer_ema)
    model = build_model_from_cfg(cfg["model"], num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the checkpoint's {source!r} weights do not fit the model of this "
                         f"config ({cfg['model'].get('type')}, {num_classes} classes): "
                         f"{str(err).splitlines()[0]} ...") from None
    from detkit.models.acnet import fold_acnet

    fold_acnet(model.eval())  # model.acnet: evaluate, export and predict the folded network
    opts = options or TestOptions()
    model = with_postprocess(model, opts.nms, opts.iou_threshold, opts.score_threshold,
                             opts.max_detections, opts.class_agnostic_nms)
    dev = torch.device(device)
    return LoadedDetector(model.to(dev).eval(), source, num_classes, dev)


# ----------------------------------------------------------------- geometry and merging
def letterbox_image(image: np.ndarray, size: int) -> tuple[Tensor, float]:
    """uint8 [H, W, 3] RGB -> (float32 Tensor[3, size, size] in [0, 1], img_scale).

    The evaluation transform of training (:func:`detkit.data.transforms.letterbox`):
    resize by ``scale = min(size / H, size / W)``, pad right/bottom.
    """
    from detkit.data.transforms import letterbox

    canvas, info = letterbox(image, {}, size)
    tensor = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1))).float() / 255.0
    return tensor, float(info["img_scale"])


def rescale_detections(det: Mapping[str, Tensor], img_scale: float,
                       orig_size: tuple[int, int]) -> dict[str, Tensor]:
    """Boxes of a letterboxed input back to original pixels: ``box / img_scale``, clipped.

    ``orig_size`` is (h, w) of the original image. Returns a new dict (scores, labels copied).
    """
    if not img_scale > 0:
        raise ValueError(f"img_scale must be > 0, got {img_scale}")
    boxes = clip_boxes_to_image(det["boxes"] / img_scale, (int(orig_size[0]), int(orig_size[1])))
    return {"boxes": boxes, "scores": det["scores"].clone(), "labels": det["labels"].clone()}


def merge_detections(dets: Sequence[Mapping[str, Tensor]], kind: str = "nms",
                     iou_threshold: float = 0.5, max_detections: int = 100,
                     **nms_kwargs: float | str) -> dict[str, Tensor]:
    """Merge one image's detections from several pyramid scales (all in original pixels).

    Concatenates them and runs per-class NMS of ``kind`` (:func:`batched_nms_by_kind`; a
    Soft-NMS returns decayed scores); keeps the ``max_detections`` best, by decreasing score.
    """
    if not dets:
        raise ValueError("merge_detections needs at least one detection dict")
    boxes = torch.cat([d["boxes"] for d in dets]).float()
    scores = torch.cat([d["scores"] for d in dets]).float()
    labels = torch.cat([d["labels"] for d in dets]).to(torch.int64)
    keep, kept_scores = batched_nms_by_kind(boxes, scores, labels, kind=kind,
                                            iou_threshold=iou_threshold, **nms_kwargs)
    order = torch.argsort(kept_scores, descending=True, stable=True)[:max_detections]
    keep = keep[order]
    return {"boxes": boxes[keep], "scores": kept_scores[order], "labels": labels[keep]}


class Predictor:
    """Original uint8 RGB images -> detections in original pixels, optionally over a pyramid.

    Args:
        model: a detector in eval mode (contract call, eval output).
        sizes: square letterbox sizes; several sizes form an image pyramid whose detections
            are merged by :func:`merge_detections`.
        merge_nms / merge_iou / max_detections / nms_kwargs: the merge's NMS; default to the
            model's own :class:`PostprocessConfig`.
        device: where the model runs.
        valid_ranges: SNIP's ``(min, max)`` per size: a size keeps the detections with
            ``min <= sqrt(w * h) < max`` in its input pixels; None keeps all.
    """

    def __init__(self, model: nn.Module, sizes: Sequence[int], merge_nms: str | None = None,
                 merge_iou: float | None = None, max_detections: int | None = None,
                 nms_kwargs: Mapping[str, float | str] | None = None,
                 device: str | torch.device = "cpu",
                 valid_ranges: Sequence[Sequence[float]] | None = None) -> None:
        if not sizes:
            raise ValueError("Predictor needs at least one input size")
        if valid_ranges and len(valid_ranges) != len(sizes):
            raise ValueError(f"{len(valid_ranges)} valid ranges for {len(sizes)} sizes")
        self.valid_ranges = ([valid_range_of(r) for r in valid_ranges] if valid_ranges
                             else [None] * len(sizes))
        self.model = model
        self.sizes = tuple(int(s) for s in sizes)
        self.device = torch.device(device)
        own = None
        if len(self.sizes) > 1 and merge_nms is None:
            own = postprocess_config(model)
            if callable(own.nms):
                raise ValueError("the model uses a callable NMS; name test.nms for the merge")
        elif len(self.sizes) > 1:
            try:
                own = postprocess_config(model)
            except ValueError:  # a model without PostprocessConfig: explicit settings only
                own = None
        self.merge_nms = merge_nms or (own.nms if own is not None else "nms")
        self.merge_iou = merge_iou if merge_iou is not None else (
            own.nms_threshold if own is not None else 0.5)
        self.max_detections = max_detections or (own.max_detections if own is not None else 100)
        self.nms_kwargs = dict(nms_kwargs if nms_kwargs is not None
                               else (own.nms_kwargs if own is not None else {}))

    @classmethod
    def from_options(cls, loaded: LoadedDetector, options: TestOptions) -> Predictor:
        """A predictor with the sizes and merge settings of ``options``."""
        return cls(loaded.model, options.sizes, options.nms, options.iou_threshold,
                   options.max_detections, device=loaded.device,
                   valid_ranges=options.valid_ranges or None)

    def with_tiles(self, tile: int | None, overlap: float = 0.25) -> Any:
        """This predictor, or with ``tile`` set a
        :class:`~detkit.engine.slicing.SlicedPredictor` around it (``tile``-px windows sharing
        ``overlap`` of a side, plus the whole image, merged by the model's NMS kind)."""
        if tile is None:
            return self
        if tile < 1 or not 0.0 <= overlap < 1.0:
            raise ValueError(f"sliced inference needs a tile of >= 1 px and an overlap in "
                             f"[0, 1), got tile {tile}, overlap {overlap}")
        from detkit.engine.slicing import SlicedPredictor

        return SlicedPredictor.around(self, tile, overlap)

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray]) -> list[dict[str, Tensor]]:
        """Per image ``dict(boxes [D, 4] xyxy original pixels, scores [D], labels [D])`` (CPU)."""
        per_image: list[list[dict[str, Tensor]]] = [[] for _ in images]
        for size, valid_range in zip(self.sizes, self.valid_ranges, strict=True):
            batch = [letterbox_image(img, size) for img in images]
            outputs = self.model([t.to(self.device) for t, _ in batch])
            for i, (out, (_, scale)) in enumerate(zip(outputs, batch, strict=True)):
                det = keep_in_valid_range({k: out[k].detach().cpu() for k in DETECTION_KEYS},
                                          valid_range)
                per_image[i].append(rescale_detections(det, scale, images[i].shape[:2]))
        if len(self.sizes) == 1:
            return [dets[0] for dets in per_image]
        return [merge_detections(dets, self.merge_nms, self.merge_iou, self.max_detections,
                                 **self.nms_kwargs) for dets in per_image]


def keep_raw(image: np.ndarray, target: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Dataset transform that keeps the raw uint8 image and numpy target (for a Predictor)."""
    return image, target
