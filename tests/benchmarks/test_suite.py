"""Benchmark suite: row table and configs, budget rules, fold overrides, resumability, claims."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from detkit.config import config_diff, dump_config, load_config
from detkit.engine.build import check_model_keys

REPO = Path(__file__).resolve().parents[2]


rows = importlib.import_module("suite_rows")
store = importlib.import_module("suite_store")
suite = importlib.import_module("suite")
kfold = importlib.import_module("kfold")

# What each ablation changes against the full model (config_diff keys), one thing each.
ONE_CHANGE = {
    "tn_loss_smooth_l1": ["model"], "tn_loss_iou": ["model"], "tn_loss_giou": ["model"],
    "tn_loss_diou": ["model"], "tn_no_cem": ["model"], "tn_no_sam": ["model"],
    "tn_cem_paper_init": ["model"], "tn_cem_scale": ["model"], "tn_balanced_rois": ["model"],
    "tn_small_objects": ["data.copy_paste.enabled", "data.oversample.enabled"],
    "tn_label_smoothing": ["train.label_smoothing"], "tn_mixup": ["data.mixup.enabled"],
    "tn_step": ["schedule.decay"], "tn_no_warmup": ["schedule.warmup"],
    "tn_small_anchors": ["model"], "tn_acnet": ["model"], "tn_autoaug": ["data.transforms"],
    "tn_multiscale": ["data.multiscale.enabled", "data.multiscale.sizes", "test.scales"],
}

# Rows that change only the training recipe (same network, same cost per iteration).
EQUAL_STEPS = {"tn_cem_paper_init", "tn_cem_scale", "tn_balanced_rois", "tn_loss_smooth_l1",
               "tn_loss_iou", "tn_loss_giou", "tn_loss_diou", "tn_small_objects",
               "tn_label_smoothing", "tn_mixup", "tn_step", "tn_no_warmup", "tn_autoaug",
               "tn_multiscale", "tn_snip"}


def test_every_row_config_loads_and_changes_one_thing() -> None:
    assert rows.ROWS[0].name == rows.FULL  # the queue starts with the full model
    full = load_config(REPO / rows.find_row(rows.FULL).config)
    for row in rows.ROWS:
        cfg = load_config(REPO / row.config)
        check_model_keys(cfg["model"])
        for key in ("data.batch_size", "data.img_size", "data.transforms", "optim.base_lr",
                    "schedule.warmup_fraction"):
            section, name = key.split(".")
            if (row.name, key) != ("tn_autoaug", "data.transforms"):  # its one change
                assert cfg[section][name] == full[section][name], (row.name, key)
        if row.name in ONE_CHANGE:
            assert config_diff(full, cfg) == ONE_CHANGE[row.name], row.name
        # recipe rows train the full model's iterations; the others their own minutes
        assert (row.steps_of == rows.FULL) == (row.name in EQUAL_STEPS), row.name
    # SNIP is measured against plain multi-scale: its valid ranges are the one change
    snip, multi = (load_config(REPO / rows.find_row(n).config)
                   for n in ("tn_snip", "tn_multiscale"))
    assert rows.find_row("tn_snip").baseline == "tn_multiscale"
    assert config_diff(multi, snip) == ["data.multiscale.valid_ranges", "test.valid_ranges"]
    with pytest.raises(ValueError, match="rows: thundernet_full"):
        rows.find_row("thundernet")


def _ctx(tmp_path: Path, minutes: float = 2.0):  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    data.mkdir()
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 8, "height": 8} for i in range(1, 49)]
    cats = [{"id": 1, "name": "cell"}]
    (data / "train.json").write_text(json.dumps({"images": images, "annotations": [],
                                                 "categories": cats}))
    return suite.make_context(str(data), None, "toy", 3, minutes, out_root=tmp_path / "results",
                              work_root=tmp_path / "work")


def test_budget_from_the_calibration_and_equal_steps(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ctx.out.mkdir(parents=True)
    (ctx.out / "calibration.json").write_text(json.dumps(
        {rows.FULL: {"s_per_iter": 0.4}, "fasterrcnn_mbv3": {"s_per_iter": 4.8}}))
    # 2 minutes = 120 s: 120 / 0.4 = 300 iterations; 120 / 4.8 = 25
    assert suite.max_iters(ctx, rows.find_row(rows.FULL)) == 300
    assert suite.max_iters(ctx, rows.find_row("fasterrcnn_mbv3")) == 25
    # a recipe row takes the full model's iterations
    assert suite.max_iters(ctx, rows.find_row("tn_label_smoothing")) == 300


def test_fold_overrides(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    full, step = rows.find_row(rows.FULL), rows.find_row("tn_step")
    f0 = suite.train_overrides(ctx, full, 1, 0, 300)
    train0, test0 = ctx.folds.files[0]
    assert f"data.train.ann_file={train0}" in f0 and "seed=1" in f0
    # fold 0 draws a held-out curve: 32 train images = 4 iterations per epoch, 300
    # iterations = 75 epochs, evaluated every 75 // 4 = 18 epochs
    assert f"data.val.ann_file={test0}" in f0 and "eval.interval=18" in f0
    f1 = suite.train_overrides(ctx, full, 1, 1, 300)
    assert "data.val.ann_file=null" in f1 and "eval.interval=0" in f1
    # step decay at 2/3 and 5/6 of the run's 75 epochs: 50 and 62
    assert "schedule.milestones=[50,62]" in suite.train_overrides(ctx, step, 0, 1, 300)
    assert suite.test_overrides(ctx, 2, "soft_nms")[-1] == "test.nms=soft_nms"


def _calibrated(tmp_path: Path):  # type: ignore[no-untyped-def]
    ctx = _ctx(tmp_path)
    ctx.out.mkdir(parents=True)
    (ctx.out / "calibration.json").write_text(json.dumps({rows.FULL: {"s_per_iter": 0.4}}))
    return ctx


def test_finished_folds_are_skipped(tmp_path: Path, monkeypatch) -> None:
    ctx = _calibrated(tmp_path)
    path = ctx.result(rows.FULL, 0, 1)
    row = rows.find_row(rows.FULL)
    path.write_text(json.dumps({"config": suite.fold_config(ctx, row, 0, 1)}))
    monkeypatch.setattr(suite, "train_fold", lambda *a: pytest.fail("must not train"))
    assert suite.run_fold(ctx, rows.FULL, 0, 1) == path
    assert suite.fold_status(ctx, rows.FULL, 0) == "1/3"


def test_a_fold_kept_from_another_config_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Editing a row's YAML (here its length, and its box loss) must not let the
    runner skip or resume folds made before the edit."""
    ctx = _calibrated(tmp_path)
    row = rows.find_row(rows.FULL)
    monkeypatch.setattr(suite, "train_fold", lambda *a: pytest.fail("must not train"))
    kept = suite.fold_config(ctx, row, 0, 1)
    kept["schedule"]["max_iters"] = 200  # the row now asks for 120 s / 0.4 = 300
    ctx.result(rows.FULL, 0, 1).write_text(json.dumps({"config": kept}))
    with pytest.raises(store.StaleFoldError, match=r"\(schedule.max_iters differ\)"):
        suite.run_fold(ctx, rows.FULL, 0, 1)
    # a half-trained run: its config.yaml beside last.pth
    work = ctx.work_dir(rows.FULL, 0, 2)
    work.mkdir(parents=True)
    (work / "last.pth").write_bytes(b"")
    half = suite.fold_config(ctx, row, 0, 2)
    half["model"]["box_loss"] = "giou"  # the row's YAML sets ciou
    dump_config(half, work / "config.yaml")
    with pytest.raises(store.StaleFoldError, match="model.box_loss differ"):
        suite.run_fold(ctx, rows.FULL, 0, 2)


def test_stale_keys_compare_only_what_the_row_sets() -> None:
    kept = {"seed": 0, "model": {"type": "t", "x": [1, 2]}, "data": {"a": 1, "b": 2}}
    # keys the row does not set (data.b) are not compared; tuples equal lists
    assert store.stale_keys(kept, {"model": {"x": (1, 2)}, "data": {"a": 1}}) == []
    # a changed value and a key the kept config lacks are both named
    assert store.stale_keys(kept, {"data": {"a": 3}, "model": {"y": 1}}) == ["data.a",
                                                                           "model.y"]


def test_open_ranges_are_kept_as_strict_json_and_compare_equal() -> None:
    inf = float("inf")
    cfg = {"data": {"multiscale": {"valid_ranges": [[24.0, inf], (0.0, -inf)]}}, "x": 1.5}
    safe = store.json_safe(cfg)
    assert safe == {"data": {"multiscale": {"valid_ranges": [[24.0, "inf"], [0.0, "-inf"]]}},
                    "x": 1.5}
    assert store.json_safe({"v": float("nan")}) == {"v": "nan"}
    text = json.dumps(safe, allow_nan=False)  # what the result writer does: no error
    # a fold stored that way is not stale against the same config asked again
    assert store.stale_keys(json.loads(text), cfg) == []
    assert store.stale_keys(json.loads(text), {"x": 2.0}) == ["x"]


def test_seconds_per_iteration_from_a_log(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    times = [0.0, 2.0, 2.5, 3.0, 3.5, 4.0, 4.6, 5.0, 5.5]  # steps 2, .5, .5, .5, .5, .6, .4, .5
    log.write_text("".join(json.dumps({"kind": "train", "iter": i + 1, "train_seconds": t}) + "\n"
                           for i, t in enumerate(times)))
    # skipping the first 5 steps leaves .6, .4, .5: median .5
    assert suite.seconds_per_iteration(log) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="too few"):
        suite.seconds_per_iteration(log, skip=20)


def _write_fold(ctx, row: str, seed: int, fold: int, dets: list) -> None:  # type: ignore[no-untyped-def]
    ctx.result(row, seed, fold).parent.mkdir(parents=True, exist_ok=True)
    ctx.result(row, seed, fold).write_text(json.dumps(
        {"row": row, "seed": seed, "fold": fold, "max_iters": 300, "latency_ms": 10.0}))
    store.write_dets(ctx.dets(row, seed, fold), dets)


def _toy_context(tmp_path: Path, images_count: int):  # type: ignore[no-untyped-def]
    """A suite context on a toy dataset: ``images_count`` 64-px images, one 20-px box each."""
    data = tmp_path / "data"
    data.mkdir()
    ids = range(1, images_count + 1)
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 64} for i in ids]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400,
             "iscrowd": 0} for i in ids]
    (data / "train.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                 "categories": [{"id": 1, "name": "cell"}]}))
    return suite.make_context(str(data), None, "toy", 3, 2.0, out_root=tmp_path / "results",
                              work_root=tmp_path / "work")


def test_render_pools_folds_and_judges_a_claim(tmp_path: Path) -> None:
    render = importlib.import_module("render_suite")
    ctx = _toy_context(tmp_path, 12)
    for fold, (_, test_file) in enumerate(ctx.folds.files):
        ids = [im["id"] for im in json.loads(test_file.read_text())["images"]]
        # the full model finds every box; the no-CEM row finds none (a far box instead)
        _write_fold(ctx, rows.FULL, 0, fold, [{"image_id": i, "category_id": 1,
                                               "bbox": [4, 4, 20, 20], "score": 0.9} for i in ids])
        _write_fold(ctx, "tn_no_cem", 0, fold, [{"image_id": i, "category_id": 1,
                                                 "bbox": [40, 40, 20, 20], "score": 0.9}
                                                for i in ids])
    _write_fold(ctx, "tn_no_sam", 0, 0, [])  # one fold only: not complete, not judged
    out = render.render(ctx, tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "img")
    text = out.read_text()
    # pooled over the 3 folds: AP 1.0 against 0.0 on all 12 images, on every resample
    assert "| CEM | `thundernet_full` | `tn_no_cem` | AP | 1.000 | 0.000 | +1.000 | " \
           "[+1.000, +1.000] | **holds** |" in text
    assert "| SAM | `thundernet_full` | `tn_no_sam` | AP |  |  | not run yet |" in text
    assert "all 12 images of `toy`" in text
    # the command under the claims table names the claim rows (the main table's does not
    # name tn_no_cem) and the data set
    claims_cmd = [ln for ln in text.splitlines()
                  if ln.startswith("python benchmarks/suite.py run") and "tn_no_cem" in ln]
    assert len(claims_cmd) == 1 and "--data DIR --name toy" in claims_cmd[0]
    assert (tmp_path / "docs" / "img" / "toy_claims.png").is_file()


def test_render_marks_a_latency_not_in_the_back_to_back_run(tmp_path: Path) -> None:
    render = importlib.import_module("render_suite")
    ctx = _toy_context(tmp_path, 6)
    for fold in range(3):
        _write_fold(ctx, rows.FULL, 0, fold, [])
        _write_fold(ctx, "ssdlite", 0, fold, [])  # its fold-0 latency_ms: 10.0
    (ctx.out / "latency.json").write_text(json.dumps(
        {"seed": 0, "rounds": 3, "load_avg": 1.0, "latency_ms": {rows.FULL: 42.0}}))
    text = render.render(ctx, tmp_path / "benchmarks.md", tmp_path / "img").read_text()
    full_line = next(ln for ln in text.splitlines() if ln.startswith(f"| `{rows.FULL}`"))
    ssd_line = next(ln for ln in text.splitlines() if ln.startswith("| `ssdlite`"))
    assert "| 42.0 |" in full_line  # taken from latency.json, unmarked
    assert "| 10.0 * |" in ssd_line  # its own fold figure, marked
    assert "\\* not in that back-to-back run: `ssdlite`" in text


def test_gt_roi_section_pools_the_folds_weighted_by_boxes() -> None:
    render = importlib.import_module("render_suite")
    claims = importlib.import_module("suite_claims")

    def entry(boxes: int, p_true: float, p_bg: float) -> dict:
        return {"boxes": boxes, "p_true": p_true, "p_background": p_bg, "top1": 0.0}

    folds = {0: {"gt_roi_scores": {"by_class": {"RBC": entry(3, 0.9, 0.1),
                                                "Platelets": entry(1, 0.2, 0.8)}}},
             1: {"gt_roi_scores": {"by_class": {"RBC": entry(1, 0.5, 0.3),
                                                "Platelets": entry(0, 0.0, 0.0)}}},
             2: {}}  # a fold run before the figure was recorded
    runs = {"tn_x": [claims.Pooled("tn_x", 0, folds, [], {}, {}, {})],
            "tn_old": [claims.Pooled("tn_old", 0, {0: {}, 1: {}, 2: {}}, [], {}, {}, {})]}
    lines = render.gt_roi_section(runs, ["RBC", "WBC", "Platelets"])
    # RBC: (3 x 0.9 + 1 x 0.5) / 4 = 0.8 p(true), (3 x 0.1 + 1 x 0.3) / 4 = 0.15 p(bg);
    # WBC has no box; Platelets only fold 0's box; 2 folds have the figure
    assert "| `tn_x` | 0.800 / 0.150 | n/a | 0.200 / 0.800 | 2 |" in lines
    assert not any("tn_old" in line for line in lines)
    assert render.gt_roi_section({"tn_old": runs["tn_old"]}, ["RBC"]) == []
