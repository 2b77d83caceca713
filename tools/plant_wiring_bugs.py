"""Plant issue 16's wiring bugs one at a time and check that the named tests catch each.

docs/testing.md ("Planted wiring bugs") lists bugs that once survived every test. This tool
re-checks the claim: for each bug it replaces one exact source snippet, runs the tests that
must now fail (each in its own pytest process), restores the file (also on Ctrl-C or an
error), and prints FAILED (caught) or the exit code per test. It exits 1 if any named test
passed with its bug planted, or if a snippet is no longer found exactly once (the table
needs updating after a refactor).

    python tools/plant_wiring_bugs.py            # all bugs
    python tools/plant_wiring_bugs.py --list     # names only
    python tools/plant_wiring_bugs.py sam nms    # a subset, by key

Run it on a clean working tree: it rewrites source files while the tests run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bug:
    """One planted bug: ``old`` (found exactly once in ``path``) becomes ``new``."""
    key: str
    title: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


BUGS = (
    Bug("nms", "post-processing always runs plain NMS", "detkit/models/postprocess.py",
        "kind=config.nms,", 'kind="nms",',
        ("tests/models/test_postprocess.py::test_nms_kind_changes_overlapping_detections",
         "tests/models/detectors/test_thundernet.py::test_nms_switch_reaches_the_detections")),
    Bug("sam", "ThunderNet skips SAM", "detkit/models/detectors/thundernet.py",
        "return features if self.sam is None else self.sam(features, rpn_features)",
        "return features",
        ("tests/models/detectors/test_thundernet.py::test_sam_reweights_the_pooled_map",)),
    Bug("smoothing", "R-CNN ignores label_smoothing", "detkit/models/heads/rcnn.py",
        "epsilon=self.label_smoothing,", "epsilon=0.0,",
        ("tests/models/heads/test_rcnn.py::test_losses_on_exact_boxes_with_label_smoothing",
         "tests/engine/test_build.py::test_label_smoothing_switch_reaches_the_model")),
    Bug("matcher", "IoU == high threshold treated as ignore", "detkit/models/matching.py",
        "matched[best_iou < high] = IGNORE", "matched[best_iou <= high] = IGNORE",
        ("tests/models/test_matching.py::test_iou_exactly_at_each_threshold",
         "tests/models/detectors/test_dense_loss.py::"
         "test_exact_losses_with_positives_negatives_and_ignored_anchors",
         "tests/models/heads/test_rpn.py::test_exact_losses_with_anchors_at_both_thresholds")),
    Bug("norm", "dense loss divided by num_pos + 1", "detkit/models/detectors/dense_loss.py",
        "norm = float(max(1, num_pos))", "norm = float(num_pos + 1)",
        ("tests/models/detectors/test_dense_loss.py::"
         "test_exact_losses_with_positives_negatives_and_ignored_anchors",)),
    Bug("every", "multi-scale resizer ignores every", "detkit/data/multiscale.py",
        "if self.calls % self.every == 0:", "if True:",
        ("tests/data/test_multiscale.py::test_resizer_draws_a_new_size_every_n_batches",)),
    Bug("feather", "copy-paste ignores feather", "detkit/data/copy_paste.py",
        "blend_into(image, moved, x, y, self.feather)", "blend_into(image, moved, x, y, 0)",
        ("tests/data/test_copy_paste.py::test_feather_blends_the_pasted_border",)),
)


def run_test(test: str) -> int:
    """Exit code of pytest on one test id (1: it failed, as it must with the bug planted)."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", test]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True).returncode


def plant(bug: Bug, root: Path = ROOT,
          runner: Callable[[str], int] = run_test) -> list[tuple[str, int]]:
    """Plant ``bug`` under ``root``, run its tests with ``runner``, restore the file;
    (test, exit code) per test."""
    path = root / bug.path
    source = path.read_text()
    count = source.count(bug.old)
    if count != 1:
        raise LookupError(f"{bug.path}: the snippet of '{bug.key}' occurs {count} times "
                          f"(need exactly 1): {bug.old!r}")
    path.write_text(source.replace(bug.old, bug.new))
    try:
        return [(test, runner(test)) for test in bug.tests]
    finally:
        path.write_text(source)


def main(argv: list[str] | None = None) -> int:
    """Plant the chosen bugs (all by default) and report; 0 when every test caught its bug."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="*", help=f"bugs to plant: {[b.key for b in BUGS]}")
    parser.add_argument("--list", action="store_true", help="print the bugs and exit")
    args = parser.parse_args(argv)
    unknown = set(args.keys) - {b.key for b in BUGS}
    if unknown:
        parser.error(f"unknown bug keys {sorted(unknown)}; known: {[b.key for b in BUGS]}")
    chosen = [b for b in BUGS if not args.keys or b.key in args.keys]
    if args.list:
        for bug in chosen:
            print(f"{bug.key:10s} {bug.title} ({bug.path})")
        return 0
    missed = 0
    for bug in chosen:
        try:
            results = plant(bug)
        except LookupError as err:
            print(f"error: {err}")
            missed += 1
            continue
        print(f"{bug.title} ({bug.path}):")
        for test, code in results:
            caught = code == 1
            missed += not caught
            print(f"    {'FAILED (caught)' if caught else f'NOT CAUGHT (exit {code})'}  {test}",
                  flush=True)
    verdict = "every named test caught its bug" if not missed else f"{missed} not caught"
    print(f"{len(chosen)} bugs planted; {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
