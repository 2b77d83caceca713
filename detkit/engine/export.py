"""ONNX export of detkit detectors (dense detector and ThunderNet-lite), checked with onnxruntime.

The exported graph takes one letterboxed image ``image: float32 [1, 3, S, S]`` in [0, 1] (RGB,
not normalised: the model normalises inside, as in PyTorch) and returns ``boxes [D, 4]`` xyxy
in the input's pixels, ``scores [D]`` and ``labels [D]`` int64 in 1..K, sorted by decreasing
score. The input size S is fixed at export time. Map boxes to the original image with
``box / scale``, ``scale = min(S / h, S / w)`` (the letterbox of
:func:`detkit.engine.inference.letterbox_image`).

Export uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, opset 17;
``roi_align(aligned=True)`` needs >= 16). ONNX has only plain NMS (``NonMaxSuppression``), so a
model configured with DIoU-/Soft-/Cluster-NMS is exported with plain NMS at the same IoU
threshold, with an :class:`ExportWarning`. One image goes through the graph, so no per-image
split (whose sizes tracing would freeze) is recorded.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from detkit.engine.inference import postprocess_config, with_postprocess

__all__ = [
    "ExportWarning",
    "OnnxDetector",
    "OrtCheck",
    "check_onnxruntime",
    "export_checked",
    "describe_model",
    "export_onnx",
    "exportable_copy",
    "match_detections",
    "run_onnxruntime",
]

OUTPUT_NAMES = ("boxes", "scores", "labels")


class ExportWarning(UserWarning):
    """A setting of the model that ONNX cannot express was replaced during export."""


class OnnxDetector(nn.Module):
    """Tensor-in, tensors-out view of a detector for export.

    ``forward(image [1, 3, H, W] in [0, 1]) -> (boxes [D, 4], scores [D], labels [D] int64)``,
    the same detections as ``model([image[0]])[0]`` in eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """See the class docstring."""
        if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
            raise ValueError(f"image must be [1, 3, H, W], got {tuple(image.shape)}")
        det = self.model([image[0]])[0]
        return det["boxes"], det["scores"], det["labels"]


def exportable_copy(model: nn.Module) -> nn.Module:
    """Copy of ``model`` in eval mode whose final NMS is plain NMS (warns when it changes)."""
    config = postprocess_config(model)
    if config.nms == "nms":
        return with_postprocess(model).eval()
    name = config.nms if isinstance(config.nms, str) else getattr(
        config.nms, "__name__", "callable")
    warnings.warn(f"ONNX has no {name}; the exported model uses plain NMS at IoU "
                  f"{config.nms_threshold} (1 setting replaced)", ExportWarning, stacklevel=3)
    return with_postprocess(model, nms="nms").eval()


def export_onnx(model: nn.Module, path: str | Path, img_size: int, opset: int = 17,
                metadata: Mapping[str, Any] | None = None, seed: int = 0,
                plain_nms: nn.Module | None = None) -> Path:
    """Export ``model`` (dense detector or ThunderNet) to ONNX for ``[1, 3, img_size, img_size]``.

    ``model`` is not modified (an eval-mode copy is traced; pass ``plain_nms``, the result of
    :func:`exportable_copy`, when it was already made, so its warning is given once).
    ``metadata`` (e.g. class names, input size) is stored as JSON strings in the ONNX model's
    ``metadata_props`` when the ``onnx`` package is installed. The example input is a seeded
    random image; the graph does not depend on its values. Returns the written path.
    """
    if img_size < 32:
        raise ValueError(f"img_size must be >= 32, got {img_size}")
    if opset < 16:
        raise ValueError(f"opset must be >= 16 (roi_align with aligned=True), got {opset}")
    wrapper = OnnxDetector(plain_nms if plain_nms is not None else exportable_copy(model)).eval()
    device = next(wrapper.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    example = torch.rand(1, 3, img_size, img_size, generator=generator).to(device)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # exporter-internal notices (constant folding of strided slices, jit.script deprecation)
        warnings.filterwarnings("ignore", message="Constant folding")
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")
        # dynamo=False is chosen on purpose (it exports both detectors); silence its notice
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=list(OUTPUT_NAMES))
    if metadata:
        _write_metadata(path, metadata)
    return path


def _write_metadata(path: Path, metadata: Mapping[str, Any]) -> None:
    """Store ``metadata`` as ``metadata_props`` (JSON-encoded values) in the ONNX file."""
    try:
        import onnx
    except ImportError:
        warnings.warn("the onnx package is not installed; metadata not written (1 file)",
                      ExportWarning, stacklevel=3)
        return
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = str(key)
        entry.value = json.dumps(value)
    onnx.save(proto, str(path))


def run_onnxruntime(path: str | Path, image: Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Run an exported model on CPU with onnxruntime: ``image`` [1, 3, S, S] float in [0, 1].

    Returns ``{"boxes" [D, 4], "scores" [D], "labels" [D]}`` numpy arrays.
    Raises ImportError naming the package when onnxruntime is missing.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("running an exported model needs onnxruntime "
                          "(pip install onnxruntime)") from None
    array = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(list(OUTPUT_NAMES), {"image": array.astype(np.float32)})
    return dict(zip(OUTPUT_NAMES, outputs, strict=True))


def match_detections(first: Mapping[str, Any], second: Mapping[str, Any],
                     atol: float = 1e-3) -> tuple[bool, float]:
    """Do two detection sets agree? One-to-one match on label and box (``max |diff| <= atol``).

    Detections with nearly equal scores may come out in a different order from two runtimes,
    so each detection of ``first`` is paired with the closest unpaired one of ``second`` of the
    same label. Returns (every detection paired both ways, largest box difference of the pairs;
    ``inf`` when unpaired).
    """
    boxes_a = np.asarray(first["boxes"], dtype=np.float64).reshape(-1, 4)
    boxes_b = np.asarray(second["boxes"], dtype=np.float64).reshape(-1, 4)
    labels_a = np.asarray(first["labels"]).reshape(-1)
    labels_b = np.asarray(second["labels"]).reshape(-1)
    if len(boxes_a) != len(boxes_b):
        return False, float("inf")
    free = np.ones(len(boxes_b), dtype=bool)
    worst = 0.0
    for box, label in zip(boxes_a, labels_a, strict=True):
        diff = np.abs(boxes_b - box).max(axis=1) if len(boxes_b) else np.zeros(0)
        diff = np.where(free & (labels_b == label), diff, np.inf)
        j = int(np.argmin(diff))
        if not diff[j] <= atol:
            return False, float("inf")
        free[j] = False
        worst = max(worst, float(diff[j]))
    return True, worst


def describe_model(model_type: str, img_size: int, class_names: Sequence[str],
                   model: nn.Module | None = None) -> dict[str, Any]:
    """The metadata :func:`export_onnx` stores: input spec, pre-processing, NMS, class names.

    With ``model`` (the detector before export) it also records the normalisation constants
    applied inside the graph and the NMS: the kind the model was configured with, the kind
    the graph runs (always plain NMS) and the thresholds.
    """
    meta: dict[str, Any] = {
        "model_type": model_type, "img_size": int(img_size),
        "input": "image float32 [1, 3, S, S] RGB in [0, 1], letterboxed (pad right/bottom)",
        "outputs": "boxes [D, 4] xyxy input pixels, scores [D], labels [D] int64 1..K",
        "box_format": "xyxy, input pixels; original pixels = box / scale",
        "preprocessing": {
            "letterbox_size": int(img_size),
            "scale": "min(S / height, S / width)",
            "resized_size": "(round(height * scale), round(width * scale))",
            "interpolation": "cv2.resize INTER_LINEAR (bilinear, half-pixel centres)",
            "padding": "zeros to the right and bottom (top-left aligned)",
            "channels": "RGB",
            "value_range": "uint8 / 255 -> float32 in [0, 1]",
        },
        "class_names": list(class_names),
    }
    transform = getattr(model, "transform", None) if model is not None else None
    if transform is not None and hasattr(transform, "mean"):
        meta["preprocessing"]["normalisation_in_graph"] = {
            "mean": [round(float(v), 6) for v in transform.mean.tolist()],
            "std": [round(float(v), 6) for v in transform.std.tolist()]}
    if model is not None:
        config = postprocess_config(model)
        kind = config.nms if isinstance(config.nms, str) else getattr(config.nms, "__name__",
                                                                      "callable")
        meta["nms"] = {"configured": kind, "exported": "nms (ONNX NonMaxSuppression)",
                       "iou_threshold": float(config.nms_threshold),
                       "score_threshold": float(config.score_threshold),
                       "max_detections": int(config.max_detections),
                       "per_class": True}
    return meta


@dataclass(frozen=True)
class OrtCheck:
    """Result of :func:`check_onnxruntime` on one image."""

    image_index: int
    num_torch: int
    num_ort: int
    matched: bool
    max_box_diff: float


def check_onnxruntime(path: str | Path, exported: nn.Module, images: Sequence[np.ndarray],
                      img_size: int, atol: float = 1e-3) -> OrtCheck:
    """Compare onnxruntime with PyTorch (``exported``: the plain-NMS copy that was exported).

    ``images`` are uint8 ``[H, W, 3]`` RGB images (e.g. validation images); they are tried in
    order and the first on which PyTorch finds at least one detection is compared (the last
    one when none has any). Boxes are compared in the letterboxed input's pixels.
    """
    from detkit.engine.inference import letterbox_image

    if not images:
        raise ValueError("check_onnxruntime needs at least one image")
    device = next(exported.parameters()).device
    for index, image in enumerate(images):
        tensor, _ = letterbox_image(image, img_size)
        with torch.no_grad():
            ref = exported([tensor.to(device)])[0]
        if len(ref["boxes"]) or index == len(images) - 1:
            break
    got = run_onnxruntime(path, tensor[None])
    same, worst = match_detections(got, {k: v.cpu().numpy() for k, v in ref.items()}, atol)
    return OrtCheck(index, len(ref["boxes"]), len(got["boxes"]), same, worst)


def _check_images(cfg: Mapping[str, Any], limit: int = 16) -> list[np.ndarray]:
    """Up to ``limit`` images of the config's evaluation split (empty when it is missing)."""
    from detkit.data.image_io import read_image_rgb
    from detkit.engine.build import evaluation_split

    try:
        _, ann_file, img_dir = evaluation_split(cfg)
        data = json.loads(Path(ann_file).read_text())
        root = Path(img_dir) if img_dir else Path(ann_file).parent
        files = [root / im["file_name"] for im in data["images"][:limit]]
        return [read_image_rgb(f) for f in files]
    except (OSError, ValueError, KeyError):
        return []


def export_checked(cfg: Mapping[str, Any], checkpoint: str | Path | Mapping[str, Any],
                   out: str | Path,
                   img_size: int | None = None, opset: int = 17,
                   prefer_ema: bool = True) -> tuple[Path, OrtCheck | None]:
    """What ``tools/export.py`` does: load, export with metadata, check with onnxruntime.

    Prints a line per step. The check runs on the config's evaluation images (the first with a
    PyTorch detection), or on a seeded random image when none can be read. Returns the path and
    the check (None without onnxruntime).
    """
    from detkit.engine.checkpoint import as_checkpoint
    from detkit.engine.inference import class_names_from_config, load_detector, read_test_options

    options = read_test_options(cfg)
    checkpoint = as_checkpoint(checkpoint)
    names = class_names_from_config(cfg, checkpoint)
    size = img_size or options.img_size
    loaded = load_detector(cfg, checkpoint, len(names), "cpu", options, prefer_ema=prefer_ema)
    plain = exportable_copy(loaded.model)
    meta = describe_model(cfg["model"]["type"], size, names, loaded.model)
    path = export_onnx(loaded.model, out, size, opset=opset, metadata=meta, plain_nms=plain)
    print(f"exported {cfg['model']['type']} ({loaded.weights} weights, input 1x3x{size}x{size}) "
          f"to {path} ({path.stat().st_size / 1e6:.1f} MB); metadata: letterbox {size}, "
          f"INTER_LINEAR, NMS {meta['nms']['configured']} -> plain nms")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime not installed: output check skipped (pip install onnxruntime)")
        return path, None
    images = _check_images(cfg)
    where = "validation image"
    if not images:
        rng = np.random.default_rng(1)
        images, where = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8)], "random image"
    check = check_onnxruntime(path, plain, images, size)
    counts = f"{check.num_ort} detections vs PyTorch's {check.num_torch}"
    if check.matched:
        print(f"onnxruntime check on {where} {check.image_index + 1}: {counts}; all match "
              f"(max |box diff| {check.max_box_diff:.2e} px)")
    else:
        warnings.warn(f"onnxruntime check on {where} {check.image_index + 1}: {counts}; not "
                      f"all match (nearly equal scores can change NMS decisions)",
                      ExportWarning, stacklevel=2)
    return path, check
