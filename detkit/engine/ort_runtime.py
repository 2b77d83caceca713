"""Runtimes for ``predict``: PyTorch eager, PyTorch with BatchNorm folded, onnxruntime.

:func:`prepare_runtime` turns a loaded eval-mode detector into the callable a
:class:`detkit.engine.inference.Predictor` runs (``model(images) -> detections``):

* ``"torch"``: the model as it is;
* ``"folded"``: a copy with BatchNorm folded into the convolutions
  (:func:`detkit.models.fuse.fold_batchnorm`; same detections up to float rounding);
* ``"onnxruntime"``: the folded model exported to ONNX at one input size
  (:func:`detkit.engine.export.export_onnx`) and run by an :class:`OrtDetector`.
  ONNX has only plain NMS, so the graph's final NMS is plain NMS at the model's IoU
  threshold (an ``ExportWarning`` says so when the model was configured otherwise);
  its boxes match PyTorch running the same plain-NMS model within float rounding.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["RUNTIMES", "OrtDetector", "prepare_runtime"]

RUNTIMES = ("torch", "folded", "onnxruntime")


def _session_options(threads: int):  # -> onnxruntime.SessionOptions
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(int(threads), 1)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OrtDetector:
    """An exported detector run by onnxruntime with the model call's contract.

    ``detector(images)``: images ``[3, S, S]`` float in [0, 1], S the export size (a
    :class:`Predictor` letterboxes to it) -> per image ``dict(boxes [D, 4] xyxy input
    pixels, scores [D], labels [D] int64)`` as torch tensors, like the eval-mode model.
    The graph takes one image, so a batch is run image by image.

    Args:
        path: the ``.onnx`` file.
        img_size: its input size S (checked on every call).
        threads: onnxruntime intra-op threads (default: torch's thread count).
    """

    def __init__(self, path: str | Path, img_size: int, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("runtime 'onnxruntime' needs the onnxruntime package "
                              "(pip install onnxruntime, or the dev extra)") from None
        self.path = Path(path)
        self.img_size = int(img_size)
        count = torch.get_num_threads() if threads is None else threads
        self.session = ort.InferenceSession(str(self.path), _session_options(count),
                                            providers=["CPUExecutionProvider"])

    def eval(self) -> OrtDetector:
        """No-op (the graph is inference only); returns self, like ``nn.Module.eval``."""
        return self

    def run_one(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """One letterboxed image ``[1, 3, S, S]`` float32 -> numpy boxes, scores, labels."""
        boxes, scores, labels = self.session.run(None, {"image": image})
        return {"boxes": boxes, "scores": scores, "labels": labels}

    def __call__(self, images: Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """See the class docstring."""
        out = []
        for image in images:
            if tuple(image.shape) != (3, self.img_size, self.img_size):
                raise ValueError(f"the ONNX graph takes [3, {self.img_size}, {self.img_size}] "
                                 f"images, got {tuple(image.shape)}")
            array = image.detach().cpu().numpy().astype(np.float32, copy=False)[None]
            det = self.run_one(np.ascontiguousarray(array))
            out.append({"boxes": torch.from_numpy(det["boxes"]).float(),
                        "scores": torch.from_numpy(det["scores"]).float(),
                        "labels": torch.from_numpy(det["labels"]).to(torch.int64)})
        return out


def prepare_runtime(model: nn.Module, runtime: str, img_size: int,
                    onnx_path: str | Path | None = None,
                    threads: int | None = None) -> nn.Module | OrtDetector:
    """The callable that runs ``model`` (eval mode) under ``runtime`` (module docstring).

    ``img_size``: the single input size (onnxruntime only; pyramids need the PyTorch
    runtimes). ``onnx_path``: where to write the graph (default: a temporary file).
    Raises ValueError for an unknown runtime.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return model
    from detkit.models.fuse import fold_batchnorm

    folded = fold_batchnorm(model)
    if runtime == "folded":
        return folded
    from detkit.engine.export import export_onnx

    if onnx_path is None:
        onnx_path = Path(tempfile.mkdtemp(prefix="detkit_ort_")) / "model.onnx"
    export_onnx(folded, onnx_path, img_size)
    return OrtDetector(onnx_path, img_size, threads)
