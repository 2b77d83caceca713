"""Render ``docs/benchmarks.md`` and its PNG figures from BCCD result JSON files.

Usage: ``python benchmarks/render_bccd.py [--results DIR] [--out docs/benchmarks.md]``

Only numbers found in the result files are printed; rows without a result are listed as
"not run yet". Rows run with several seeds show the mean and the seed spread (max - min).
A paper's claim gets a verdict: "holds" (measured gain larger than the seed spread),
"does not hold" (a loss larger than the spread), "noise" (the delta is inside the spread), or
"undetermined" (one seed per side and no spread measured yet).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bccd  # noqa: E402
import bccd_plots  # noqa: E402
from bccd_claims import (  # noqa: E402
    CLAIMS,
    CLASSES,
    claim_outcome,
    class_ap50,
    metric_of,
    spread,
    values,
)

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
NOT_RUN = "not run yet"


# ----------------------------------------------------------------- reading
def load_results(results_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Result dicts per row name, sorted by seed (files that are not results are skipped)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "row" in data and "seed" in data:
            out.setdefault(data["row"], []).append(data)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in out.items()}


# ----------------------------------------------------------------- formatting
def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or "n/a"."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def mean_cell(vals: Sequence[float], digits: int = 3) -> str:
    """Mean over seeds, with "± half-spread" when there are several seeds."""
    if not vals:
        return "n/a"
    cell = fmt(statistics.fmean(vals), digits)
    s = spread(vals)
    return cell if s is None else f"{cell} ± {s / 2:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def commands(names: Sequence[str], results: Mapping[str, Sequence[Mapping[str, Any]]]
             ) -> list[str]:
    """The exact commands that reproduce a table (the seeds that were run, else seed 0)."""
    lines = ["```bash"]
    for name in names:
        seeds = [r["seed"] for r in results.get(name, [])] or [0]
        lines += [f"python benchmarks/bccd.py run {name} --seed {s}" for s in seeds]
    return lines + ["python benchmarks/render_bccd.py", "```", ""]


def not_run_lines(names: Sequence[str], results: Mapping[str, Any]) -> list[str]:
    """"- `row`: not run yet" for every row of ``names`` without a result."""
    return [f"- `{n}` ({bccd.ROW_BY_NAME[n].title}): {NOT_RUN}" for n in names
            if n not in results]


SMALL_OBJECTS_NOTE = (
    "Oversampling repeats every train image that holds a small object, which is most of "
    "BCCD train, so the same 6 epochs are 40 steps each instead of 25 (see `steps`). "
    "`tn_steps_matched` is the full model without the augmentations trained for that many "
    "steps: against it, only the augmentation differs. The claims table reports both "
    "comparisons. `tn_small_anchors` changes the RPN anchors instead of the data: the paper's "
    "anchors (32 to 512 px on the stride-16 map) reach IoU 0.5 with few BCCD platelets at "
    "320 input; see the anchor coverage table below for both anchor sets.")


def train_steps(run: Mapping[str, Any]) -> int | None:
    """Training steps of a run: the last iteration in its curves (the final val evaluation)."""
    curves = run.get("curves") or {}
    iters = [int(p[0]) for key in ("loss", "val") for p in curves.get(key, [])]
    return max(iters) if iters else None


def steps_cell(runs: Sequence[Mapping[str, Any]]) -> str:
    """The distinct step counts of a row's runs ("150", "240/960") or "n/a"."""
    steps = sorted({s for r in runs if (s := train_steps(r)) is not None})
    return "/".join(map(str, steps)) or "n/a"


def _row_cells(name: str, runs: Sequence[Mapping[str, Any]]) -> list[str]:
    cells = [f"`{name}`", bccd.ROW_BY_NAME[name].title]
    cells += [mean_cell([v for r in runs if (v := metric_of(r, m)) is not None])
              for m in (*METRICS, "Platelets")]
    cells.append(mean_cell([r["latency_ms"] for r in runs if r.get("latency_ms")], 1))
    cells.append(mean_cell([r["train_images_per_s"] for r in runs
                            if r.get("train_images_per_s")], 1))
    cells.append(mean_cell([r["train_wall_s"] / 60 for r in runs if r.get("train_wall_s")], 1))
    cells.append(",".join(str(r["seed"]) for r in runs))
    return cells


def main_section(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Headline table (AP family, Platelets AP, latency, img/s, wall time) + per-class AP."""
    names = [r.name for r in bccd.ROWS if r.group == "main"]
    header = ["row", "model", *METRICS, "Platelets AP", "latency ms", "train img/s",
              "train min", "seeds"]
    lines = ["## Main rows", ""]
    lines += table(header, [_row_cells(n, results[n]) for n in names if n in results])
    lines += [""] + not_run_lines(names, results) + ["", "Reproduce:", ""]
    lines += commands(names, results)
    lines += ["### Per-class AP (test, IoU .50:.95 / .50)", ""]
    rows = []
    for n in names:
        if n in results:
            rows.append([f"`{n}`"] + [f"{mean_cell(values(results, n, c))} / "
                                      f"{mean_cell(class_ap50(results[n], c))}" for c in CLASSES])
    lines += table(["row", *CLASSES], rows) + [""] + not_run_lines(names, results)
    return lines + ["", "Reproduce: the commands of the main table above.", ""]


def ablation_section(group: str, title: str, baseline: str,
                     results: Mapping[str, Sequence[Mapping[str, Any]]], note: str = ""
                     ) -> list[str]:
    """One ablation table: each row's AP, APs, Platelets AP and deltas vs ``baseline``.

    ``note``: a paragraph printed under the table (what the reader must know to read it).
    """
    names = [baseline] + [r.name for r in bccd.ROWS if r.group == group and r.name != baseline]
    header = ["row", "change", "AP", "ΔAP", "APs", "ΔAPs", "Platelets AP", "ΔPlatelets",
              "AP spread", "steps", "seeds"]
    rows = []
    for n in names:
        if n not in results:
            continue
        cells = [f"`{n}`", "baseline" if n == baseline else bccd.ROW_BY_NAME[n].title]
        for metric in ("AP", "APs", "Platelets"):
            mine, base = values(results, n, metric), values(results, baseline, metric)
            cells.append(mean_cell(mine))
            ok = mine and base and n != baseline
            cells.append(f"{statistics.fmean(mine) - statistics.fmean(base):+.3f}" if ok else "")
        cells += [fmt(spread(values(results, n, "AP"))), steps_cell(results[n]),
                  ",".join(str(r["seed"]) for r in results[n])]
        rows.append(cells)
    shown = table(header, rows) if rows else ["No row of this table has run yet."]
    lines = [f"### {title}", ""] + shown + [""] + ([note, ""] if note else [])
    lines += not_run_lines(names, results) + ["", "Reproduce:", ""]
    return lines + commands(names, results)


def nms_section(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """NMS kinds on the full model's checkpoint: AP, AP50, APs, ms per image, delta vs nms."""
    lines = ["### NMS at test time (one checkpoint of the full model)", ""]
    runs = results.get("tn_nms", [])
    if not runs:
        return lines + not_run_lines(["tn_nms"], results) + [""] + commands(["tn_nms"], results)
    rows = []
    for kind in bccd.NMS_KINDS:
        ap = values(results, f"tn_nms:{kind}", "AP")
        base = values(results, "tn_nms:nms", "AP")
        ms = [r["nms_kinds"][kind]["nms_ms_per_image"] for r in runs if kind in r["nms_kinds"]]
        delta = f"{statistics.fmean(ap) - statistics.fmean(base):+.4f}" if ap and base else ""
        rows.append([kind, mean_cell(ap, 4), delta,
                     mean_cell(values(results, f"tn_nms:{kind}", "AP50"), 4),
                     mean_cell(values(results, f"tn_nms:{kind}", "APs"), 4),
                     mean_cell(ms, 2)])
    lines += table(["NMS", "AP", "ΔAP vs nms", "AP50", "APs", "NMS ms / image"], rows)
    lines += ["", "NMS time: the final per-class NMS only, batch 1, 2 threads, mean over the "
              "72 test images.", "", "Reproduce:", ""]
    return lines + commands(["tn_nms"], results)


def coverage_section(results: Mapping[str, Sequence[Mapping[str, Any]]], data_dir: Path
                     ) -> list[str]:
    """Anchor coverage (IoU >= 0.5) of BCCD train boxes for the dense rows.

    Taken from a run's result, or computed from the row's config when the row has not been
    trained (coverage needs the anchors and the annotations only) and data_dir holds BCCD.
    """
    from bccd_measure import anchor_coverage_rows

    from detkit.config import load_config

    rows = []
    for n in ("dense_anchors_off", "dense_anchors_on", "dense_fpn", "dense_ssh", bccd.FULL,
              "tn_small_anchors"):
        cov, source = (results.get(n) or [{}])[0].get("anchor_coverage"), "run"
        if not cov and (data_dir / "train.json").is_file():
            cfg = load_config(bccd.REPO / bccd.ROW_BY_NAME[n].config)
            cov, source = anchor_coverage_rows(cfg, data_dir), "config"
        if not cov:
            continue
        pick = {(c["bucket"], c["class"]): c for c in cov}
        cells = [f"`{n}`", source, str(cov[0]["num_anchors"])]
        for key in (("all", "all"), ("small", "all"), ("all", "Platelets"), ("all", "RBC")):
            c = pick.get(key)
            cells.append(f"{100 * c['coverage']:.1f}% ({c['mean_best_iou']:.2f})" if c and
                         c["boxes"] else "n/a")
        rows.append(cells)
    if not rows:
        return ["Anchor coverage: no dense row run yet and no BCCD data to compute it.", ""]
    return ["Anchor coverage of BCCD train boxes at 320: share with an anchor at IoU >= 0.5 "
            "(mean best IoU), detkit.models.coverage on the row's anchors:", ""] + table(
        ["row", "from", "anchors", "all", "small", "Platelets", "RBC"], rows) + [
        "", "Reproduce one row: `python tools/anchor_coverage.py configs/bench/ROW.yaml "
        "data/bccd/train.json --input-size 320`.", ""]


def claims_section(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[list[str], list]:
    """The claims table: paper figure beside the measured delta, spread and verdict."""
    rows, deltas = [], []
    for claim in CLAIMS:
        out = claim_outcome(claim, results)
        if out is None:
            rows.append([claim.name, claim.paper, NOT_RUN, "", "", NOT_RUN])  # 6 columns
            continue
        rel = claim.relative and out["without"] > 0  # relative change needs a non-zero base
        unit = "relative" if rel else claim.metric + (" (base 0: no relative change)"
                                                      if claim.relative else "")
        shown = f"{100 * out['shown']:+.1f}%" if rel else f"{out['delta']:+.4f}"
        noise = out["shown_noise"]
        noise_cell = "n/a" if noise is None else (
            f"{100 * noise:.1f}%" if rel else f"{noise:.4f}") + \
            (f" ({out['spread_source']})" if noise is not None else "")
        per_seed = " / ".join(", ".join(fmt(v) for v in values(results, ref, claim.metric))
                              for ref in (claim.with_row, claim.without_row))
        rows.append([claim.name, claim.paper, f"{shown} {unit} ({fmt(out['without'], 4)} -> "
                     f"{fmt(out['with'], 4)})", noise_cell, per_seed,
                     f"**{out['verdict']}**"])
        deltas.append((claim.name, out["delta"], out["noise"]))
    lines = ["## The papers' claims on BCCD", ""]
    lines += table(["claim", "paper", "measured here", "seed spread",
                    "per seed (with / without)", "verdict"], rows)
    lines += ["", "A delta inside the seed-to-seed spread is noise; no figure is rounded toward "
              "the paper.", ""]
    return lines, deltas


def figures(results: Mapping[str, Sequence[Mapping[str, Any]]], img_dir: Path,
            link_prefix: str, deltas: list, data_dir: Path) -> list[str]:
    """Draw the PNGs and return the Markdown that links them."""
    first = {n: runs[0] for n, runs in results.items() if runs}
    main = {n: first[n] for n in (r.name for r in bccd.ROWS if r.group == "main") if n in first}
    per_class = {n: {c: v for c in CLASSES if (v := metric_of(r, c)) is not None}
                 for n, r in main.items()}
    full = first.get(bccd.FULL)
    made = [
        ("Training curves of the main rows (seed of the first result)",
         bccd_plots.plot_training_curves(main, img_dir / "bccd_curves.png")),
        ("PR curves of the full model on test",
         bccd_plots.plot_pr_curves(full, img_dir / "bccd_pr_full.png", bccd.FULL)
         if full else None),
        ("Per-class AP of the main rows", bccd_plots.plot_per_class_ap(
            per_class, img_dir / "bccd_per_class_ap.png")),
        ("Full model's detections (right) next to the ground truth (left), three test images",
         bccd_plots.plot_detections(full, data_dir / "test.json", data_dir,
                                    img_dir / "bccd_detections.png", bccd.FULL)
         if full else None),
        ("Measured deltas of the claims with their seed spread",
         bccd_plots.plot_ablation_deltas(deltas, img_dir / "bccd_claims.png")),
    ]
    lines = ["## Figures", ""]
    for caption, path in made:
        lines += ([f"{caption}:", "", f"![{caption}]({link_prefix}{path.name})", ""] if path
                  else [f"{caption}: {NOT_RUN}.", ""])
    return lines


def setup_lines(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """The fixed budget, read from a result's resolved config (or the base config file)."""
    any_run = next((runs[0] for runs in results.values() if runs), None)
    if any_run is None:
        return ["No result files yet: every row is not run yet.", ""]
    cfg = any_run["config"]
    sch, opt, data = cfg["schedule"], cfg["optim"], cfg["data"]
    loads = [r["latency_load_avg"] for runs in results.values() for r in runs
             if r.get("latency_load_avg") is not None]
    load = f"{min(loads):.1f} to {max(loads):.1f}" if loads else "n/a (not recorded)"
    flagged = sorted({r["row"] for runs in results.values() for r in runs if r.get("overrides")})
    lines = [
        f"Budget of every row: {sch['epochs']} epochs of BCCD train (205 images), batch "
        f"{data['batch_size']}, input {data['img_size']} letterbox, horizontal flip, "
        f"{opt['type']} lr {opt['base_lr']:g}, {sch['warmup']} warmup {sch['warmup_iters']} "
        f"steps, {sch['decay']} decay; best epoch chosen on val AP, reported on test (72 "
        f"images); the one exception is the control row `tn_steps_matched` (see Small "
        f"objects). Everything trains from scratch: no pretrained weights. CPU, "
        f"{any_run.get('threads', 2)} threads, torch {any_run.get('torch', '?')}.",
        "",
        "The dense detector rows use the SNet49 backbone of ThunderNet-lite, so the budget "
        "buys the same backbone for every detkit row. The torchvision peers "
        "(`weights=None, weights_backbone=None`) are trained by detkit's trainer on the same "
        "batches, unchanged.",
        "",
        "Latency: one forward pass, batch 1, 320 input, 2 threads, median of 20 (after 3 "
        "warm-up passes). Train img/s: median over the logged steps. Train min: wall time "
        "of tools/train.py including the per-epoch val evaluation. Runs were made one at a "
        "time, but some shared the two cores with other jobs, so timings are indicative, "
        "not best-case; the latency measurements saw a 1-minute load average of "
        f"{load}. Load changes timings only: the AP figures depend on the code and the "
        "seed, not on the machine's load.",
        "",
    ]
    timed = [(r["train_wall_s"], r["row"]) for runs in results.values() for r in runs
             if r.get("train_wall_s")]
    if timed:
        _, row = max(timed)
        minutes = ", ".join(f"{s / 60:.1f}" for s, r in timed if r == row)
        lines += [f"The budget was chosen so that the slowest row fits in about 15 minutes on an "
                  f"idle 2-core machine; the slowest row run here, `{row}`, took (per seed) "
                  f"{minutes} minutes of training; a time far above 15 was made on a shared "
                  f"machine.", ""]
    if flagged:
        lines += [f"Warning: results of {', '.join(flagged)} were run with budget overrides "
                  f"(smoke tests), not the benchmark budget.", ""]
    return lines


def budget_section(results_dir: Path, base: Mapping[str, Sequence[Mapping[str, Any]]]
                   ) -> list[str]:
    """Budget check: rows trained longer (``<results>/epochs<N>/``) beside their base figures,
    and the claims re-judged on the longer runs alone."""
    lines: list[str] = []
    folders = sorted((int(p.name[6:]), p) for p in results_dir.glob("epochs*")
                     if p.name[6:].isdigit())
    for n, folder in folders:
        longer = load_results(folder)
        if not longer:
            continue
        names = [r.name for r in bccd.ROWS if r.name in longer]
        rows = []
        for name in names:
            cells = [f"`{name}`", bccd.ROW_BY_NAME[name].title]
            for metric in ("AP", "AP50", "APs", "Platelets"):
                cells += [mean_cell(values(base, name, metric)),
                          mean_cell(values(longer, name, metric))]
            cells += [steps_cell(longer[name]),
                      mean_cell([r["train_wall_s"] / 60 for r in longer[name]
                                 if r.get("train_wall_s")], 1),
                      ",".join(str(r["seed"]) for r in longer[name])]
            rows.append(cells)
        claim_rows = []
        for claim in CLAIMS:
            out = claim_outcome(claim, longer)
            if out is not None:
                claim_rows.append([claim.name, f"{out['delta']:+.4f} {claim.metric} "
                                   f"({fmt(out['without'], 4)} -> {fmt(out['with'], 4)})",
                                   fmt(out["noise"], 4), f"{out['seeds'][0]} / "
                                   f"{out['seeds'][1]}", f"**{out['verdict']}**"])
        lines += [f"## Budget check: {n} epochs", "",
                  f"The rows below were trained again for {n} epochs (same data, batch, "
                  "augmentation, optimizer, warmup and cosine decay, which spans the longer "
                  "run), to see which figures and verdicts depend on the base budget. Each cell "
                  "pairs the base budget (left) with the longer one (right).", ""]
        lines += table(["row", "change", "AP", f"AP {n} ep", "AP50", f"AP50 {n} ep", "APs",
                        f"APs {n} ep", "Platelets AP", f"Platelets {n} ep", "steps",
                        "train min", "seeds"], rows)
        if claim_rows:
            lines += ["", f"Claims judged on the {n}-epoch runs alone (spread: these runs' "
                      "seeds; \"undetermined\" with one seed per row):", ""]
            lines += table(["claim", "measured", "seed spread", "seeds (with / without)",
                            "verdict"], claim_rows)
        lines += ["", "Reproduce:", "", "```bash"]
        lines += [f"python benchmarks/bccd.py run {name} --seed {r['seed']} --epochs {n}"
                  for name in names for r in longer[name]]
        lines += ["python benchmarks/render_bccd.py", "```", ""]
    return lines


def render(results_dir: Path, out_md: Path, img_dir: Path, data_dir: Path = bccd.DATA_DIR
           ) -> str:
    """Write ``out_md`` (and PNGs in ``img_dir``) from the result files; return the text."""
    results = load_results(results_dir)
    claims, deltas = claims_section(results)
    prefix = Path(os.path.relpath(img_dir.resolve(), out_md.parent.resolve())).as_posix()
    lines = ["# BCCD benchmark", "",
             "Blood-cell detection (BCCD: RBC, WBC, Platelets; 205 train / 87 val / 72 test "
             "images, 640x480). Made by `benchmarks/bccd.py` (one JSON per run in "
             "`benchmarks/results/`) and rendered by `benchmarks/render_bccd.py`.", ""]
    lines += setup_lines(results) + main_section(results) + claims
    lines += ["## Ablations", ""] + nms_section(results)
    lines += ablation_section("box_loss", "Box loss (R-CNN head; full model = CIoU)", bccd.FULL,
                              results)
    lines += ablation_section("small_objects", "Small objects (Kisantal 2019)", bccd.FULL,
                              results, SMALL_OBJECTS_NOTE)
    lines += ablation_section("thundernet", "ThunderNet-lite modules", bccd.FULL, results)
    lines += ablation_section("anchors", "Dense anchors (FaceBoxes densification, S3FD scale "
                              "compensation)", "dense_anchors_off", results)
    lines += coverage_section(results, data_dir)
    lines += ablation_section("tricks", "Training tricks (Bag of Freebies)", bccd.FULL, results)
    lines += budget_section(results_dir, results)
    lines += figures(results, img_dir, f"{prefix}/", deltas, data_dir)
    text = "\n".join(lines).rstrip() + "\n"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(bccd.RESULTS_DIR))
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--img-dir", default="docs/img")
    args = parser.parse_args(argv)
    os.chdir(bccd.REPO)
    render(Path(args.results), Path(args.out), Path(args.img_dir))
    print(f"wrote {args.out} and figures in {args.img_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
