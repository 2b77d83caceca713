"""Error analysis by object size: the breakdown of COCO's ``analyze()`` (Hoiem-style).

For each area range (all, small, medium, large) the AP is reported under successively looser
rules, averaged over the classes that have ground truth there; each step's gain over the
previous one is the AP lost to that kind of error:

* ``C75`` / ``C50``: AP at IoU 0.75 / 0.50 (the COCO numbers);
* ``Loc``: AP at IoU 0.10, localisation errors forgiven;
* ``Sim``: and detections on objects of another class *of the same supercategory* ignored
  (those objects become ignore regions for the class evaluated);
* ``Oth``: and detections on objects of any other class ignored (class confusion forgiven);
* ``BG``: and every remaining false positive removed: precision 1 up to the recall reached
  under ``Oth`` (the AP left is limited by the missed objects only);
* ``FN``: 1.0, every object found.

So ``Loc - C50`` is lost to poor localisation, ``Sim - Loc`` to similar-class confusion,
``Oth - Sim`` to other-class confusion, ``BG - Oth`` to background false positives and
``FN - BG`` to missed objects. Computed with pycocotools' ``COCOeval`` (maxDets 100).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ERROR_STAGES", "ErrorBreakdown", "error_breakdown"]

ERROR_STAGES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
AREAS = (("all", 0.0, 1e10), ("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2),
         ("large", 96.0**2, 1e10))


def _run(gt: Mapping, dets: Sequence[Mapping], iou_thrs: Sequence[float],
         cat_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval precision ``[T, R, K, A]`` and recall ``[T, K, A]`` at maxDets 100."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(dict(gt))
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(list(dets))) if dets else None
        if coco_dt is None:  # loadRes([]) fails in pycocotools: nothing detected
            shape_p = (len(iou_thrs), 101, len(cat_ids), len(AREAS))
            has_gt = np.array([[any(a["category_id"] == c and not a.get("iscrowd", 0)
                                    and lo <= a["area"] < hi for a in gt["annotations"])
                                for _, lo, hi in AREAS] for c in cat_ids])
            zero = np.where(has_gt[None, None], 0.0, -1.0)
            return np.broadcast_to(zero, shape_p).copy(), np.broadcast_to(
                zero[:, 0], (len(iou_thrs), len(cat_ids), len(AREAS))).copy()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        ev.params.catIds = list(cat_ids)
        ev.params.areaRng = [[lo, hi] for _, lo, hi in AREAS]
        ev.params.areaRngLbl = [name for name, _, _ in AREAS]
        ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][..., -1], ev.eval["recall"][..., -1]


def _ap(precision: np.ndarray) -> np.ndarray:
    """Per (class, area) AP from precision ``[R, K, A]``; NaN where there is no ground truth."""
    valid = precision > -1
    total = np.where(valid, precision, 0.0).sum(axis=0)
    return np.where(valid.any(axis=0), total / precision.shape[0], np.nan)


def _relabelled(gt: Mapping, cat_id: int, others: set[int]) -> dict:
    """``gt`` with the objects of classes ``others`` turned into ignore regions of ``cat_id``."""
    out = dict(gt)
    anns = []
    for ann in gt["annotations"]:
        if ann["category_id"] in others:
            ann = {**ann, "category_id": cat_id, "iscrowd": 1}
        anns.append(ann)
    out["annotations"] = anns
    return out


@dataclass(frozen=True)
class ErrorBreakdown:
    """``ap[area][stage]``: mean AP over classes under each rule of :data:`ERROR_STAGES`."""

    ap: dict[str, dict[str, float]]

    def table(self) -> str:
        """Text table, one row per area range, with the AP lost to each error kind."""
        head = "error analysis (AP under looser rules; gain = AP lost to that error)"
        cols = " ".join(f"{s:>6}" for s in ERROR_STAGES)
        lines = [head, f"{'area':<7} {cols}"]
        for area, row in self.ap.items():
            cells = " ".join("   n/a" if np.isnan(row[s]) else f"{row[s]:6.3f}"
                             for s in ERROR_STAGES)
            lines.append(f"{area:<7} {cells}")
        lines.append("Loc-C50: localisation, Sim-Loc: similar class, Oth-Sim: other class, "
                     "BG-Oth: background, FN-BG: missed")
        return "\n".join(lines)

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``errors.json`` and ``errors.png`` (stacked bars per area) into ``out_dir``."""
        from matplotlib import colormaps
        from matplotlib.figure import Figure

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / "errors.json"
        clean = {a: {s: (None if np.isnan(v) else float(v)) for s, v in row.items()}
                 for a, row in self.ap.items()}
        json_path.write_text(json.dumps(clean, indent=1) + "\n")
        fig = Figure(figsize=(3.2 * len(self.ap), 3.2))
        axes = fig.subplots(1, len(self.ap), sharey=True)
        for ax, (area, row) in zip(np.atleast_1d(axes), self.ap.items(), strict=True):
            values = [0.0 if np.isnan(row[s]) else row[s] for s in ERROR_STAGES]
            ax.bar(ERROR_STAGES, values, color=colormaps["viridis"](np.linspace(0, 1, len(values))))
            ax.set_title(area)
            ax.set_ylim(0, 1)
            ax.tick_params(axis="x", labelrotation=45)
        np.atleast_1d(axes)[0].set_ylabel("AP")
        fig.tight_layout()
        png_path = out / "errors.png"
        fig.savefig(png_path, dpi=100)
        return {"errors_json": json_path, "errors_png": png_path}


def error_breakdown(gt: Mapping, results: Sequence[Mapping]) -> ErrorBreakdown:
    """The :data:`ERROR_STAGES` APs per area range of COCO ``results`` on ground truth ``gt``
    (a COCO dict whose annotations have ``area``; see the module docstring)."""
    gt = dict(gt)
    gt["annotations"] = [{"area": a["bbox"][2] * a["bbox"][3], "iscrowd": 0, **a}
                         for a in gt.get("annotations", [])]
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    cat_ids = [c["id"] for c in cats]
    precision, _ = _run(gt, results, (0.75, 0.5, 0.1), cat_ids)
    per_stage = {"C75": _ap(precision[0]), "C50": _ap(precision[1]), "Loc": _ap(precision[2])}
    sim = np.full((len(cats), len(AREAS)), np.nan)
    oth = np.full_like(sim, np.nan)
    bg = np.full_like(sim, np.nan)
    rec_thrs = np.linspace(0.0, 1.0, 101)
    for k, cat in enumerate(cats):
        own = [d for d in results if d["category_id"] == cat["id"]]
        same = {c["id"] for c in cats
                if c["id"] != cat["id"] and c.get("supercategory") == cat.get("supercategory")}
        p_sim, _ = _run(_relabelled(gt, cat["id"], same), own, (0.1,), [cat["id"]])
        sim[k] = _ap(p_sim[0])[0]
        others = set(cat_ids) - {cat["id"]}
        p_oth, r_oth = _run(_relabelled(gt, cat["id"], others), own, (0.1,), [cat["id"]])
        oth[k] = _ap(p_oth[0])[0]
        reach = r_oth[0, 0]  # [A] recall at IoU 0.1 with other classes forgiven
        # precision 1 at every recall point up to the recall reached (none when nothing found)
        bg[k] = np.where(reach > -1, [(rec_thrs <= r + 1e-12).mean() if r > 0 else 0.0
                                      for r in reach], np.nan)
    per_stage.update({"Sim": sim, "Oth": oth, "BG": bg})
    has_gt = ~np.isnan(per_stage["C50"])
    per_stage["FN"] = np.where(has_gt, 1.0, np.nan)
    ap = {}
    for a, (name, _, _) in enumerate(AREAS):
        col = has_gt[:, a]
        ap[name] = {s: (float(np.mean(per_stage[s][col, a])) if col.any() else float("nan"))
                    for s in ERROR_STAGES}
    return ErrorBreakdown(ap)
