"""Render ``docs/benchmarks.md`` and its figures from the benchmark suite's results.

Usage: ``python benchmarks/render_suite.py [--data DIR --name NAME] [--k 3] [--minutes 2]
[--out docs/benchmarks.md]``

Only numbers found in the result files are printed; a row without a complete seed (all folds)
is listed as not run yet. Values are pooled over the held-out folds (every image of the data
set once); a row's value is the mean over its seeds, with the seeds' values beside it. Claims
carry a paired bootstrap 95% interval over images and seeds and a verdict (suite_claims.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import suite  # noqa: E402
import suite_plots  # noqa: E402
from suite_claims import CLAIMS, Pooled, judge, metric_value, pool_runs  # noqa: E402
from suite_measure import pr_and_drawn  # noqa: E402
from suite_rows import FULL, ROWS  # noqa: E402

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or "n/a"."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def seeds_cell(runs: Sequence[Pooled], metric: str) -> str:
    """Mean over seeds and the per-seed values: ``0.254 (0.251 / 0.257)``."""
    vals = [v for v in (metric_value(r, metric) for r in runs) if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return fmt(vals[0])
    return f"{statistics.fmean(vals):.3f} ({' / '.join(fmt(v) for v in vals)})"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def command(names: Sequence[str], ctx: suite.Context) -> list[str]:
    """The command that reproduces a table's rows."""
    data = "" if ctx.dataset.name == "bccd" else f" --data DIR --name {ctx.dataset.name}"
    return ["```bash", f"python benchmarks/suite.py run {' '.join(names)} --seeds 0,1,2 "
            f"--k {ctx.folds.k} --minutes {ctx.minutes:g}{data}", "```", ""]


def _fold0(runs: Sequence[Pooled]) -> dict[str, Any]:
    return runs[0].folds[0] if runs else {}


def _iters(runs: Sequence[Pooled]) -> int | None:
    return _fold0(runs).get("max_iters")


def main_section(runs: Mapping[str, Sequence[Pooled]], ctx: suite.Context,
                 calib: Mapping[str, Any], classes: Sequence[str]) -> list[str]:
    """The headline table: every detector at equal training time."""
    names = [r.name for r in ROWS if r.group == "main"]
    header = ["row", *METRICS, *[f"{c} AP" for c in classes], "iterations", "s/iter",
              "latency ms", "seeds"]
    rows: list[list[str]] = []
    fallback: list[str] = []
    lat_path = ctx.out / "latency.json"
    measured = json.loads(lat_path.read_text())["latency_ms"] if lat_path.is_file() else {}
    for n in names:
        if n not in runs:
            continue
        lat = ([measured[n]] if n in measured else
               [r.folds[0].get("latency_ms") for r in runs[n] if r.folds[0].get("latency_ms")])
        if measured and lat and n not in measured:
            fallback.append(n)
        mark = " *" if n in fallback else ""
        rows.append([f"`{n}`", *[seeds_cell(runs[n], m) for m in METRICS],
                     *[seeds_cell(runs[n], c) for c in classes], str(_iters(runs[n])),
                     fmt(calib.get(n, {}).get("s_per_iter")),
                     fmt(statistics.median(lat), 1) + mark if lat else "n/a",
                     ",".join(str(r.seed) for r in runs[n])])
    missing = [n for n in names if n not in runs]
    lines = ["## Detectors at equal training time", ""]
    lines += table(header, rows) if rows else ["No main row has a complete seed yet."]
    lines += [""] + ([f"Not run yet: {', '.join(f'`{n}`' for n in missing)}.", ""]
                     if missing else [])
    when = (f"measured back to back by `python benchmarks/suite.py latency` (3 rounds in "
            f"turn, load average {json.loads(lat_path.read_text())['load_avg']:.1f})"
            if measured else "measured after each row's training, at different times")
    lines += ["Latency: batch 1, 320 letterbox, 2 threads, median of 20 passes of the fold-0 "
              "model (seed 0) on the data set's first image, post-processing included (the "
              f"trained model's own candidates reach its NMS); {when}. s/iter: the row's "
              "idle-machine seconds per training iteration (`calibration.json`).", ""]
    if fallback:
        lines += [f"\\* not in that back-to-back run: {', '.join(f'`{n}`' for n in fallback)} "
                  "shows the median of its fold-0 models' own measurements, taken after each "
                  "fold's training, under whatever load the machine had then; it does not "
                  "compare like for like with the other rows.", ""]
    lines += ["Reproduce:", ""]
    return lines + command(names, ctx)


def claims_section(runs: Mapping[str, Sequence[Pooled]], gt: Mapping[str, Any],
                   ctx: suite.Context) -> tuple[list[str], list[tuple[str, float, float, float]]]:
    """The claims table with intervals and verdicts, the command behind it, and the figure's
    data."""
    rows, shown, halves = [], [], []
    for claim in CLAIMS:
        result = judge(claim, runs, gt)
        a, b = runs.get(claim.with_row, []), runs.get(claim.without_row, [])
        if result is None:
            rows.append([claim.name, f"`{claim.with_row}`", f"`{claim.without_row}`",
                         claim.metric, "", "", "not run yet", "", "", "", claim.paper])
            continue
        halves.append(((result.high - result.low) / 2, claim.same_models))
        shown.append((claim.name, result.delta, result.low, result.high))
        rows.append([claim.name, f"`{claim.with_row}`", f"`{claim.without_row}`", claim.metric,
                     seeds_cell(a, claim.metric), seeds_cell(b, claim.metric),
                     f"{result.delta:+.3f}", f"[{result.low:+.3f}, {result.high:+.3f}]",
                     f"**{result.verdict}**", f"{len(a)} / {len(b)}", claim.paper])
    header = ["claim", "with", "without", "metric", "with (seeds)", "without (seeds)", "delta",
              "95% interval", "verdict", "seeds", "paper"]
    lines = ["## Claims", ""] + table(header, rows) + [""]
    for same, what in ((False, "two trained rows"), (True, "two test-time settings of the "
                                                      "same models (seeds paired)")):
        widths = [h for h, kind in halves if kind == same]
        if widths:
            lines += [f"Smallest effect this protocol resolves between {what}: an interval "
                      f"half-width of {statistics.median(widths):.3f} AP (median over "
                      f"{len(widths)} judged claims; range {min(widths):.3f} to "
                      f"{max(widths):.3f}): a true effect that large or larger gives an "
                      "interval that excludes 0.", ""]
    if halves:
        lines += ["Intervals: paired bootstrap, 1000 replicates, images and seeds resampled "
                  "(images shared by both sides); with one seed per row the seed-to-seed "
                  "variation is not in the interval yet.", ""]
    names = list(dict.fromkeys(n for c in CLAIMS for n in c.rows))
    lines += ["Reproduce (rows that the main table already ran are skipped as finished):", ""]
    return lines + command(names, ctx), shown


def recall_section(runs: Mapping[str, Sequence[Pooled]]) -> list[str]:
    """Test-time proposal recall (IoU 0.5) of the two-stage rows, pooled over folds."""
    rows = []
    for name, seeds in runs.items():
        counts: dict[str, list[int]] = {}
        for run in seeds:
            for fold in run.folds.values():
                table_ = fold.get("proposal_recall")
                if not table_:
                    continue
                entries = {"all": table_["all"], **table_["by_size"], **table_["by_class"]}
                for key, e in entries.items():
                    c = counts.setdefault(key, [0, 0])
                    c[0] += e["found"]
                    c[1] += e["total"]
        if counts:
            cells = [f"{c[0] / c[1]:.3f}" if c[1] else "n/a" for c in counts.values()]
            rows.append((name, list(counts), cells))
    if not rows:
        return []
    keys = rows[0][1]
    lines = ["## Do small objects reach the second stage?", "",
             "Share of objects with a test-time proposal at IoU >= 0.5 (the RPN's test "
             "proposals, 200 unless the row says otherwise), held-out folds pooled, all seeds; "
             "size buckets by COCO area in original pixels.", ""]
    lines += table(["row", *keys], [[f"`{n}`", *c] for n, k, c in rows if k == keys])
    return lines + [""]


def gt_roi_section(runs: Mapping[str, Sequence[Pooled]], classes: Sequence[str]) -> list[str]:
    """The R-CNN fed the ground-truth boxes (``gt_roi_scores.json`` of tools/test.py): per
    class the mean p(true class) and p(background), pooled over the folds that have it."""
    rows = []
    for name, seeds in runs.items():
        sums = {c: [0.0, 0.0, 0.0] for c in classes}  # boxes, sum p(true), sum p(background)
        folds = 0
        for run in seeds:
            for fold in run.folds.values():
                scores = fold.get("gt_roi_scores")
                if not scores:
                    continue
                folds += 1
                for c, e in scores["by_class"].items():
                    if c in sums and e["boxes"]:
                        sums[c][0] += e["boxes"]
                        sums[c][1] += e["boxes"] * e["p_true"]
                        sums[c][2] += e["boxes"] * e["p_background"]
        if folds:
            cells = [f"{t / n:.3f} / {b / n:.3f}" if n else "n/a" for n, t, b in sums.values()]
            rows.append([f"`{name}`", *cells, str(folds)])
    if not rows:
        return []
    lines = ["### The second stage on exact boxes", "",
             "Each held-out ground-truth box fed to the R-CNN as a RoI: mean p(true class) / "
             "p(background) per class, over the folds that recorded it (`gt_roi_scores` of "
             "`tools/test.py`; folds run before it was recorded have none).", ""]
    return lines + table(["row", *classes, "folds"], rows) + [""]


def nms_section(runs: Mapping[str, Sequence[Pooled]]) -> list[str]:
    """NMS kinds on the full model's fold checkpoints."""
    kinds = [k for k in runs if k.startswith("tn_nms:")]
    if not kinds:
        return []
    rows = []
    for k in kinds:
        ms = [f["nms_kinds"][k.split(":")[1]]["nms_ms_per_image"] for r in runs[k]
              for f in r.folds.values()]
        rows.append([f"`{k.split(':')[1]}`", seeds_cell(runs[k], "AP"),
                     seeds_cell(runs[k], "AP50"), fmt(statistics.median(ms), 2)])
    lines = ["## NMS at test time (the full model's checkpoints)", ""]
    lines += table(["NMS", "AP", "AP50", "ms per image in NMS (median over folds)"], rows)
    return lines + ["", "Reproduce:", "", "```bash",
                    "python benchmarks/suite.py run tn_nms --seeds 0,1,2", "```", ""]


def figures(runs: Mapping[str, Sequence[Pooled]], gt: Mapping[str, Any],
            claims: Sequence[tuple[str, float, float, float]], ctx: suite.Context,
            calib: Mapping[str, Any], img_dir: Path) -> list[str]:
    """Draw the PNGs and return their markdown lines."""
    tag = ctx.dataset.name
    lines = ["## Figures", ""]
    curves = {}
    for name in [r.name for r in ROWS if r.group == "main"]:
        if name in runs and name in calib:
            s = calib[name]["s_per_iter"]
            val = _fold0(runs[name]).get("curves", {}).get("val", [])
            curves[name] = [(it * s / 60.0, ap) for it, ap, *_ in val if ap is not None]
    drawn = {
        "AP against training minutes (fold 0, held-out AP)":
            suite_plots.plot_ap_vs_minutes(curves, img_dir / f"{tag}_ap_vs_minutes.png"),
        "claims with their 95% intervals":
            suite_plots.plot_claim_intervals(claims, img_dir / f"{tag}_claims.png"),
        "per-class AP": suite_plots.plot_per_class_ap(
            {n: {c: statistics.fmean(v for v in (metric_value(r, c) for r in rs) if v is not None)
                 for c in (rs[0].per_class or {})} for n, rs in runs.items() if ":" not in n},
            img_dir / f"{tag}_per_class_ap.png"),
    }
    if FULL in runs:
        extra = pr_and_drawn(gt, runs[FULL][0].dets)
        drawn["PR curves of the full model (seed 0 pooled)"] = suite_plots.plot_pr_curves(
            extra, img_dir / f"{tag}_pr_full.png", FULL)
        drawn["the full model's held-out detections"] = suite_plots.plot_detections(
            {"drawn_detections": dict(list(extra["drawn_detections"].items())[:2])},
            ctx.folds.all_file, ctx.dataset.img_dir, img_dir / f"{tag}_detections_full.png",
            FULL)
    for title, path in drawn.items():
        if path is not None:
            lines += [f"### {title}", "", f"![{title}](img/{path.name})", ""]
    return lines


def threads_line(out: Path) -> str:
    """Protocol line: how many fold results were trained with how many torch threads."""
    from collections import Counter

    counts = Counter()
    for path in sorted(out.glob("*_f[0-9]*.json")):
        body = json.loads(path.read_text())
        if body.get("kind") == "train":
            counts[int(body.get("threads", 0))] += 1
    parts = ", ".join(f"{n} with {t} thread{'s' if t != 1 else ''}"
                      for t, n in sorted(counts.items(), reverse=True))
    return ("- Training processes: of the trained folds, " + (parts or "none") + " (2 threads: "
            "one run at a time; 1 thread: two runs side by side on the 2 cores). The "
            "iterations are fixed by the budget; the thread count changes wall time and the "
            "float rounding, which the proposal ranking and sampling turn into another run, "
            "as a seed does (first step's loss 2.29931 with 1 thread, 2.29901 with 2).")


def render(ctx: suite.Context, out_md: Path, img_dir: Path) -> Path:
    """Write the markdown report and figures; return its path."""
    gt = json.loads(ctx.folds.all_file.read_text())
    runs = pool_runs(ctx.out, gt, ctx.folds.k)
    calib_path = ctx.out / "calibration.json"
    calib = json.loads(calib_path.read_text()) if calib_path.is_file() else {}
    classes = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    claims_lines, shown = claims_section(runs, gt, ctx)
    lines = [f"# Benchmarks: {ctx.dataset.name}", "",
             "Generated by `python benchmarks/render_suite.py` from the result files in "
             f"`{ctx.out}`; do not edit by hand.", "",
             "## Protocol", "",
             f"- Data: all {len(gt['images'])} images of `{ctx.dataset.name}` "
             f"({', '.join(p.name for p in ctx.dataset.ann_files)} pooled), {ctx.folds.k}-fold: "
             "each fold's images are predicted by a model trained on the other folds, and the "
             "held-out predictions of all folds form one COCO evaluation.",
             "- Model evaluated: the last checkpoint of each fold (no checkpoint is chosen on "
             "the images it is scored on).",
             f"- Budget: {ctx.minutes:g} training minutes per fold on an idle 2-core machine "
             "for detectors and architecture changes (iterations = budget / the row's measured "
             "seconds per iteration, `calibration.json`); rows that change only the recipe "
             f"(losses, augmentation, schedule) take `{FULL}`'s iterations (equal steps).",
             "- From scratch: no pretrained weights anywhere; the same data pipeline, "
             "optimizer (AdamW), warmup (a tenth of the run) and cosine decay for every row.",
             "- Seeds 0, 1, 2 per row (model init, data order, augmentation); folds fixed.",
             threads_line(ctx.out), ""]
    lines += main_section(runs, ctx, calib, classes)
    lines += claims_lines + recall_section(runs) + gt_roi_section(runs, classes)
    lines += nms_section(runs)
    lines += figures(runs, gt, shown, ctx, calib, img_dir)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines).rstrip() + "\n")
    return out_md


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--img-dir", default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--out", default="docs/benchmarks.md")
    args = parser.parse_args(argv)
    import os

    os.chdir(suite.REPO)
    ctx = suite.make_context(args.data, args.img_dir, args.name, args.k, args.minutes)
    out = render(ctx, Path(args.out), Path(args.out).parent / "img")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
