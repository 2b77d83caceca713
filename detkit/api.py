"""The Python predict API: ``det = detkit.load("best.pth"); det.predict(source)``.

:class:`Detector` wraps what ``tools/infer.py`` does (it is built on this class): the config
stored in the checkpoint (or a CONFIG that overrides it), the EMA weights when present, the
config's test-time settings (input size, image pyramid, NMS), letterboxing, and boxes mapped
back to the original pixels. ``predict`` accepts an image path, a folder, a COCO annotation
file (its images), a list of those, uint8 ``[H, W, 3]`` RGB arrays or ``[3, H, W]`` tensors,
and returns one :class:`Prediction` per image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from detkit.data.image_io import IMAGE_SUFFIXES, list_image_files

__all__ = ["DEFAULT_SCORE_THRESHOLD", "Detector", "Prediction", "coco_image_files",
           "expand_sources", "load"]

DEFAULT_SCORE_THRESHOLD = 0.3
ImageLike = Union[str, Path, np.ndarray, torch.Tensor]  # noqa: UP007 (a runtime alias, py3.10)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Detections of one image, by decreasing score.

    Attributes:
        boxes: float32 ``[D, 4]`` (x1, y1, x2, y2) in the original image's pixels.
        scores: float32 ``[D]``.
        labels: int64 ``[D]``, 1..K.
        class_names: ``D`` names, ``class_names[i]`` of ``labels[i]``.
        image_size: ``(height, width)`` of the original image.
        source: the file it was read from, None for an array or tensor.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    image_size: tuple[int, int]
    source: str | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (the per-image file ``tools/infer.py`` writes)."""
        return {
            "image": self.source,
            "height": int(self.image_size[0]),
            "width": int(self.image_size[1]),
            "boxes": [[float(v) for v in box] for box in self.boxes.tolist()],
            "scores": [float(v) for v in self.scores.tolist()],
            "labels": [int(v) for v in self.labels.tolist()],
            "class_names": list(self.class_names),
        }


def _as_rgb_uint8(image: np.ndarray | torch.Tensor, index: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB from an array of that shape or a ``[3, H, W]`` tensor
    (uint8, or float in [0, 1], rounded to uint8 like an image file)."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"input {index}: a tensor must be [3, H, W], got {tuple(image.shape)}")
        t = image.detach().cpu()
        if t.is_floating_point():
            t = (t.clamp(0.0, 1.0) * 255.0).round()
        image = t.to(torch.uint8).permute(1, 2, 0).numpy()
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"input {index}: an array must be uint8 [H, W, 3] RGB, got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"input {index}: an array must be uint8 (RGB 0-255), got {image.dtype}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"input {index}: empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def coco_image_files(ann_file: str | Path) -> list[Path]:
    """The images a COCO annotation file lists, in its order, with ``file_name`` resolved
    against the file's folder (how ``tools/convert_voc.py`` writes them)."""
    import json

    ann_file = Path(ann_file)
    try:
        images = json.loads(ann_file.read_text(encoding="utf-8"))["images"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{ann_file} is not a COCO annotation file (no 'images' list)") from None
    files = [ann_file.parent / im["file_name"] for im in images]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) listed in {ann_file} not found, "
                                f"first: {missing[0]}")
    if not files:
        raise ValueError(f"{ann_file} lists no images")
    return files


def expand_sources(source: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    """A flat list of inputs: a folder becomes its image files (sorted); errors come first."""
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise ValueError("predict() got an empty list of images")
    flat: list[ImageLike] = []
    for item in items:
        if isinstance(item, (str, Path)):
            path = Path(item)
            if path.is_dir():
                flat.extend(list_image_files(path))
            elif path.is_file() and path.suffix.lower() == ".json":
                flat.extend(coco_image_files(path))
            elif path.is_file():
                flat.append(path)
            else:
                raise FileNotFoundError(f"image or folder not found: {path}")
        elif isinstance(item, (np.ndarray, torch.Tensor)):
            flat.append(item)
        else:
            raise TypeError(f"cannot predict on a {type(item).__name__}; give a path, a folder, "
                            f"a uint8 [H, W, 3] array or a [3, H, W] tensor "
                            f"(image files: {', '.join(IMAGE_SUFFIXES)})")
    return flat


class Detector:
    """A trained detector ready to predict (see the module docstring).

    Build it with :meth:`from_checkpoint` (or :func:`detkit.load`). ``model`` is the eval-mode
    network, ``config`` the resolved config, ``names`` the class names (label k -> names[k-1]).
    """

    def __init__(self, loaded: Any, config: dict[str, Any], names: Sequence[str],
                 options: Any) -> None:
        from detkit.engine.inference import Predictor

        self.loaded = loaded
        self.config = config
        self.names = list(names)
        self.options = options
        self._predictor = Predictor.from_options(loaded, options)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, config: str | Path | None = None,
                        overrides: Iterable[str] = (), device: str | None = None,
                        prefer_ema: bool = True) -> Detector:
        """Load ``checkpoint`` (a ``.pth`` from ``tools/train.py``).

        ``config``: a YAML path or preset name replacing the checkpoint's stored config;
        ``overrides``: dotted ``key=value`` pairs (e.g. ``test.img_size=640``); ``device``:
        "cpu", "cuda" or "auto" (default: the config's ``device``).
        """
        from detkit.engine.checkpoint import load_checkpoint
        from detkit.presets import config_for_checkpoint

        ckpt = load_checkpoint(checkpoint)
        cfg = config_for_checkpoint(ckpt, config, overrides)
        return cls.from_config(cfg, ckpt, device, prefer_ema)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], checkpoint: str | Path | dict[str, Any],
                    device: str | None = None, prefer_ema: bool = True) -> Detector:
        """A detector of the resolved config ``cfg`` with the weights of ``checkpoint``
        (a path or a loaded checkpoint dict)."""
        from detkit.engine.checkpoint import as_checkpoint
        from detkit.engine.distributed import resolve_device
        from detkit.engine.inference import (
            class_names_from_config,
            load_detector,
            read_test_options,
        )

        options = read_test_options(cfg)
        checkpoint = as_checkpoint(checkpoint)
        names = class_names_from_config(cfg, checkpoint)
        loaded = load_detector(cfg, checkpoint, len(names),
                               resolve_device(device or cfg["device"]), options,
                               prefer_ema=prefer_ema)
        return cls(loaded, cfg, names, options)

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self.loaded.device

    def _with_threshold(self, score_threshold: float) -> None:
        """Lower the model's own score threshold when it would hide wanted detections."""
        from detkit.engine.inference import postprocess_config, with_postprocess

        if score_threshold < postprocess_config(self.loaded.model).score_threshold:
            self.loaded.model = with_postprocess(self.loaded.model,
                                                 score_threshold=score_threshold)
            self._predictor.model = self.loaded.model

    def iter_predict(self, source: ImageLike | Sequence[ImageLike], batch_size: int = 4,
                     score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                     on_unreadable: Callable[[Path, str], None] | None = None,
                     tile: int | None = None, tile_overlap: float | None = None,
                     workers: int = 0) -> Iterator[tuple[np.ndarray, Prediction]]:
        """Like :meth:`predict`, lazily, yielding ``(original image, prediction)`` pairs.

        ``on_unreadable(path, reason)``: called for an image file that cannot be decoded,
        which is then skipped (the rest is still predicted); None raises the OSError.
        ``workers``: processes decoding image files ahead of the model (0: none).
        ``tile`` / ``tile_overlap``: None takes the config's ``test.tile`` /
        ``test.tile_overlap``; ``tile=0`` switches slicing off.
        """
        tile = self.options.tile if tile is None else (tile or None)
        overlap = self.options.tile_overlap if tile_overlap is None else tile_overlap
        predictor: Any = self._predictor.with_tiles(tile, overlap)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        items = expand_sources(source)
        self._with_threshold(score_threshold)
        for chunk, images in self._batches(items, batch_size, workers, on_unreadable):
            for item, image, det in zip(chunk, images, predictor.predict(images), strict=True):
                keep = det["scores"] >= score_threshold
                labels = det["labels"][keep].numpy().astype(np.int64)
                yield image, Prediction(
                    boxes=det["boxes"][keep].numpy().astype(np.float32).reshape(-1, 4),
                    scores=det["scores"][keep].numpy().astype(np.float32),
                    labels=labels,
                    class_names=[self.class_name(int(k)) for k in labels],
                    image_size=(int(image.shape[0]), int(image.shape[1])),
                    source=str(item) if isinstance(item, Path) else None)

    @staticmethod
    def _batches(items: Sequence[ImageLike], batch_size: int, workers: int,
                 on_unreadable: Callable[[Path, str], None] | None
                 ) -> Iterator[tuple[list[ImageLike], list[np.ndarray]]]:
        """(items, decoded images) in batches of ``batch_size`` readable images, in order."""
        from detkit.engine.prefetch import iter_decoded

        chunk: list[ImageLike] = []
        images: list[np.ndarray] = []
        for index, image, error in iter_decoded(items, workers, _as_rgb_uint8):
            if image is None:
                if on_unreadable is None:
                    raise OSError(error)
                on_unreadable(Path(items[index]), str(error))
                continue
            chunk.append(items[index])
            images.append(image)
            if len(images) == batch_size:
                yield chunk, images
                chunk, images = [], []
        if images:
            yield chunk, images

    def use_runtime(self, runtime: str, score_threshold: float = DEFAULT_SCORE_THRESHOLD
                    ) -> None:
        """Run predictions with ``runtime``: "torch", "folded" (BatchNorm folded) or
        "onnxruntime" (single input size; see :mod:`detkit.engine.ort_runtime`).

        ``score_threshold``: the lowest score later calls will ask for (the onnxruntime graph
        fixes the model's score threshold at export).
        """
        from detkit.engine.ort_runtime import prepare_runtime

        if runtime == "onnxruntime" and len(self.options.sizes) > 1:
            raise ValueError("the onnxruntime runtime takes one input size, not a pyramid")
        self._with_threshold(score_threshold)
        self._predictor.model = prepare_runtime(self.loaded.model, runtime,
                                                self.options.sizes[0])

    def predict(self, source: ImageLike | Sequence[ImageLike], batch_size: int = 4,
                score_threshold: float = DEFAULT_SCORE_THRESHOLD, tile: int | None = None,
                tile_overlap: float | None = None, workers: int = 0) -> list[Prediction]:
        """One :class:`Prediction` per image of ``source``.

        ``source``: an image file, a folder (its image files, sorted by name, not recursive),
        a COCO annotation ``.json`` (the images it lists), a uint8 ``[H, W, 3]`` RGB array,
        a ``[3, H, W]`` tensor (uint8 or float in [0, 1]) or
        a list of any of these. Detections scoring below ``score_threshold`` are dropped
        (default 0.3, as ``tools/infer.py``). ``batch_size`` images go through the model
        at a time; ``workers`` processes decode image files ahead of the model. ``tile``:
        sliced inference for small objects (:mod:`detkit.engine.slicing`): overlapping
        ``tile``-px windows (``tile_overlap`` shared) each at the model's input size, plus the
        whole image, merged with the model's own NMS kind (None: the config's ``test.tile``;
        0: off).
        """
        return [pred for _, pred in self.iter_predict(source, batch_size, score_threshold,
                                                      tile=tile, tile_overlap=tile_overlap,
                                                      workers=workers)]

    def class_name(self, label: int) -> str:
        """Name of label ``label`` (1..K); the number itself outside that range."""
        return self.names[label - 1] if 1 <= label <= len(self.names) else str(label)


def load(checkpoint: str | Path, config: str | Path | None = None,
         overrides: Iterable[str] = (), device: str | None = None,
         prefer_ema: bool = True) -> Detector:
    """``detkit.load("best.pth")``: :meth:`Detector.from_checkpoint` (same arguments)."""
    return Detector.from_checkpoint(checkpoint, config, overrides, device, prefer_ema)
