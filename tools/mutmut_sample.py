"""A seeded, stratified sample of a mutmut scope's mutants, and its score (docs/testing.md).

A full mutmut run over ``[mutmut:models]`` does not fit a 2-core machine, so this script
estimates its mutation score from a random sample instead:

    python tools/mutmut_sample.py prepare              # generate mutants, collect test stats
    python tools/mutmut_sample.py draw --seed 16       # print the sampled mutant names
    python tools/mutmut_sample.py run --seed 16        # run the sample, then report
    python tools/mutmut_sample.py report --seed 16     # per-group score, 95 % Wilson interval

The mutants of every file fall in one of the groups of ``GROUPS`` (first matching prefix).
``draw`` sorts each group's mutant names and draws ``--per-group`` of them without
replacement with ``random.Random(seed)``, so the same seed and the same generated mutants give
the same sample. ``run --not-killed`` runs again only the sampled mutants that are not killed
now (the "after" run with new tests). A sampled mutant that no test reaches or that timed out
counts as not killed. ``report --save FILE`` keeps the verdicts, because a later run overwrites
them in ``mutants/``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

SCOPE = "models"
KILLED = (1, 3)  # mutmut's exit codes of a killed mutant (3: pytest internal error)
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("backbones, necks, heads", ("detkit/models/backbones/", "detkit/models/necks/",
                                 "detkit/models/heads/")),
    ("detectors", ("detkit/models/detectors/",)),
    ("models core", ("detkit/models/",)),
    ("trainer", ("detkit/engine/trainer.py",)),
    ("evaluation rest", ("detkit/evaluation/",)),
)
HERE = Path(__file__).resolve().parent
Row = tuple[str, int, int, int, float, float, float]


def group_of(path: str) -> str:
    """The group of a source path such as ``detkit/models/anchors.py``."""
    for name, prefixes in GROUPS:
        if path.startswith(prefixes):
            return name
    raise ValueError(f"{path} is in no group")


def wilson(killed: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``killed / total`` (95 % for the default z)."""
    if total <= 0:
        return 0.0, 1.0
    p = killed / total
    denom = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def read_verdicts(root: Path = Path("mutants")) -> dict[str, tuple[str, int | None]]:
    """Every generated mutant name -> (source path, exit code or None), from the ``.meta``
    files that mutmut writes next to each mutated file."""
    out: dict[str, tuple[str, int | None]] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        source = meta.relative_to(root).as_posix()[: -len(".meta")]
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            out[name] = (source, code)
    return out


def population(verdicts: dict[str, tuple[str, int | None]]) -> dict[str, list[str]]:
    """Group name -> the sorted names of its mutants (every group of ``GROUPS`` present)."""
    groups: dict[str, list[str]] = {name: [] for name, _ in GROUPS}
    for mutant, (source, _) in verdicts.items():
        groups[group_of(source)].append(mutant)
    return {name: sorted(names) for name, names in groups.items()}


def draw(groups: dict[str, list[str]], per_group: int, seed: int) -> dict[str, list[str]]:
    """``per_group`` names of each group (all of a smaller group), drawn in ``GROUPS`` order
    from one ``random.Random(seed)``; each group's draw is returned sorted."""
    rng = random.Random(seed)
    sample: dict[str, list[str]] = {}
    for name, _ in GROUPS:
        names = groups.get(name, [])
        sample[name] = sorted(rng.sample(names, min(per_group, len(names))))
    return sample


def summary_rows(sample: dict[str, list[str]], groups: dict[str, list[str]],
                 codes: dict[str, int | None]) -> list[Row]:
    """(group, mutants, sampled, killed, score, low, high) per group, then a ``total`` row.

    The total is the stratified estimate: each group's score weighted by its share of the
    mutants; its interval is the normal one with the finite-population correction."""
    rows = []
    n_all = sum(len(groups[name]) for name in sample)
    estimate = variance = 0.0
    for name, names in sample.items():
        killed = sum(codes.get(m) in KILLED for m in names)
        n, size = len(names), len(groups[name])
        low, high = wilson(killed, n)
        score = killed / n if n else 0.0
        rows.append((name, size, n, killed, score, low, high))
        if n and n_all:
            weight = size / n_all
            estimate += weight * score
            if n > 1:
                fpc = (size - n) / (size - 1) if size > 1 else 0.0
                variance += weight * weight * score * (1 - score) / (n - 1) * fpc
    half = 1.959964 * math.sqrt(variance)
    rows.append(("total", n_all, sum(len(v) for v in sample.values()),
                 sum(r[3] for r in rows), estimate, max(0.0, estimate - half),
                 min(1.0, estimate + half)))
    return rows


def print_rows(rows: Iterable[Row]) -> None:
    print("| group | mutants | killed / sampled | score | 95 % interval |")
    print("| --- | --- | --- | --- | --- |")
    for name, size, n, killed, score, low, high in rows:
        print(f"| {name} | {size} | {killed} / {n} | {100 * score:.1f} % "
              f"| {100 * low:.1f} - {100 * high:.1f} % |")


def prepare(scope: str) -> None:
    """Generate the mutants of ``[mutmut:scope]`` and collect mutmut's test stats (which
    tests reach which function), the first two phases of ``mutmut run``, without running any
    mutant."""
    sys.path.insert(0, str(HERE))
    import mutmut.configuration as configuration
    from mutmut_scope import section_reader

    reader = section_reader(f"mutmut:{scope}")
    configuration._config_reader = lambda: reader
    configuration.reset_config()
    from mutmut import __main__ as mm

    mm.set_mutant_under_test("mutant_generation")
    Path("mutants").mkdir(exist_ok=True)
    mm.copy_src_dir()
    mm.copy_also_copy_files()
    mm.setup_source_paths()
    mm.store_lines_covered_by_tests()
    stats = mm.create_mutants(1)
    print(f"{stats.mutated} files mutated, {stats.ignored} copied unchanged")
    mm.collect_or_load_stats(mm.get_mutant_runner(1), apply_config_invalidation=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("prepare", "draw", "run", "report"))
    parser.add_argument("--scope", default=SCOPE, help="the [mutmut:NAME] section")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--per-group", type=int, default=30)
    parser.add_argument("--not-killed", action="store_true",
                        help="run: only the sampled mutants that are not killed now")
    parser.add_argument("--save", type=Path, help="report: also write the verdicts here")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.scope)
        return 0
    verdicts = read_verdicts()
    if not verdicts:
        raise SystemExit("no mutants/*.meta: run `prepare` first")
    groups = population(verdicts)
    sample = draw(groups, args.per_group, args.seed)
    names = [m for ms in sample.values() for m in ms]
    if args.command == "draw":
        print("\n".join(names))
        return 0
    if args.command == "run":
        if args.not_killed:
            names = [m for m in names if verdicts[m][1] not in KILLED]
        if names:
            subprocess.run([sys.executable, str(HERE / "mutmut_scope.py"), args.scope, "run",
                            "--max-children", "1", *names], check=False)
        verdicts = read_verdicts()
    codes = {m: code for m, (_, code) in verdicts.items()}
    print_rows(summary_rows(sample, groups, codes))
    if args.save:
        args.save.write_text(json.dumps({m: codes[m] for m in sorted(set(
            m for ms in sample.values() for m in ms))}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
