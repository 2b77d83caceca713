"""The rows of the benchmark suite (benchmarks/suite.py): one config each under configs/bench.

A row's ``group`` places it in a table, ``baseline`` is the row its delta is taken against,
``kind`` is "train" or "nms" (test-time NMS kinds on the checkpoints of ``checkpoint_of``).
``steps_of``: a row that changes only the training recipe trains as many iterations as that
row (equal steps); otherwise the row trains the suite's minutes at its own speed (equal time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path("configs") / "bench"
NMS_KINDS = ("nms", "diou_nms", "soft_nms", "cluster_nms")
FULL = "thundernet_full"


@dataclass(frozen=True)
class Row:
    """One benchmark row (module docstring)."""

    name: str
    group: str
    title: str
    kind: str = "train"
    baseline: str | None = None
    checkpoint_of: str | None = None
    steps_of: str | None = None

    @property
    def config(self) -> Path:
        """Config file of the row (relative to the repository root)."""
        return CONFIG_DIR / f"{self.checkpoint_of or self.name}.yaml"

    @property
    def budget_text(self) -> str:
        """How the row's length is set, for the tables."""
        if self.kind == "nms":
            return f"checkpoints of {self.checkpoint_of}"
        return f"steps of {self.steps_of}" if self.steps_of else "equal time"


def _recipe(name: str, group: str, title: str) -> Row:
    return Row(name, group, title, baseline=FULL, steps_of=FULL)


ROWS: tuple[Row, ...] = (
    Row(FULL, "main", "ThunderNet-lite SNet49 (CEM, SAM, CIoU, DIoU-NMS)"),
    Row("fasterrcnn_mbv3", "main", "torchvision fasterrcnn_mobilenet_v3_large_320_fpn (peer)"),
    Row("ssdlite", "main", "torchvision ssdlite320_mobilenet_v3_large (peer)"),
    Row("dense_ssh", "main", "dense detector, SNet49 + SSH"),
    Row("dense_fpn", "main", "dense detector, SNet49 + FPN"),
    Row("tn_nms", "nms", "test-time NMS kinds on the full model's checkpoints", kind="nms",
        checkpoint_of=FULL),
    Row("tn_no_cem", "thundernet", "without CEM", baseline=FULL),
    # the same network as the full model (only its start differs): the same iterations
    Row("tn_cem_paper_init", "thundernet", "CEM context branches started like C4 (paper)",
        baseline=FULL, steps_of=FULL),
    Row("tn_cem_scale", "thundernet", "CEM context branches Kaiming behind gates started at 0",
        baseline=FULL, steps_of=FULL),
    Row("tn_no_sam", "thundernet", "without SAM", baseline=FULL),
    _recipe("tn_loss_smooth_l1", "box_loss", "R-CNN box loss smooth-L1"),
    _recipe("tn_loss_iou", "box_loss", "R-CNN box loss IoU"),
    _recipe("tn_loss_giou", "box_loss", "R-CNN box loss GIoU"),
    _recipe("tn_loss_diou", "box_loss", "R-CNN box loss DIoU"),
    _recipe("tn_small_objects", "small_objects", "copy-paste + oversampling on"),
    Row("tn_small_anchors", "small_objects", "RPN anchors 16-256 px, 16 px densified 2x2",
        baseline=FULL),
    Row("tn_platelets", "small_objects", "small anchors + copy-paste + oversampling + 300 "
        "test proposals", baseline=FULL),
    Row("tn_balanced_rois", "small_objects", "R-CNN foreground RoIs instance-balanced "
        "(Libra R-CNN)", baseline=FULL, steps_of=FULL),
    Row("dense_anchors_off", "anchors", "FPN, FaceBoxes sizes, no densification, IoU matching"),
    Row("dense_anchors_on", "anchors", "densification + scale-compensation matching on",
        baseline="dense_anchors_off"),
    _recipe("tn_label_smoothing", "tricks", "label smoothing 0.1"),
    _recipe("tn_mixup", "tricks", "visually coherent mixup"),
    _recipe("tn_step", "tricks", "step decay instead of cosine"),
    _recipe("tn_no_warmup", "tricks", "warmup off"),
    # ACNet trains more branches per step (slower): equal time, not equal steps
    Row("tn_acnet", "systems", "ACNet blocks (folded for testing)", baseline=FULL),
    _recipe("tn_autoaug", "systems", "learned detection augmentation policy v0"),
    _recipe("tn_multiscale", "systems", "multi-scale training 256/320/384 + test pyramid"),
    Row("tn_snip", "systems", "multi-scale + SNIP valid ranges (train and test)",
        baseline="tn_multiscale", steps_of=FULL),
)
ROW_BY_NAME: dict[str, Row] = {row.name: row for row in ROWS}


def find_row(name: str) -> Row:
    """The row called ``name``; ValueError naming the valid rows otherwise."""
    if name not in ROW_BY_NAME:
        raise ValueError(f"unknown row {name!r}; rows: {', '.join(ROW_BY_NAME)}")
    return ROW_BY_NAME[name]
