"""tools/mutmut_sample.py: Wilson intervals, the stratified estimate and a reproducible draw."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_tool():
    spec = importlib.util.spec_from_file_location("mutmut_sample", ROOT / "tools" /
                                                  "mutmut_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def test_wilson_interval_matches_the_formula():
    # 5 / 10, z = 1.96: z^2 = 3.8416, denominator 1 + 0.38416 = 1.38416, centre
    # (0.5 + 0.19208) / 1.38416 = 0.5, half width 1.96 * sqrt(0.025 + 0.009604) / 1.38416
    # = 0.26341 -> [0.23659, 0.76341]
    low, high = tool.wilson(5, 10)
    assert low == pytest.approx(0.23659, abs=2e-5)
    assert high == pytest.approx(0.76341, abs=2e-5)
    # 0 / 10: centre = half width = 0.19208 / 1.38416 = 0.13877 -> [0, 0.27754]
    low, high = tool.wilson(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.27754, abs=2e-5)
    assert tool.wilson(10, 10)[1] == pytest.approx(1.0)
    assert tool.wilson(0, 0) == (0.0, 1.0)


def test_groups_follow_the_first_matching_prefix():
    assert tool.group_of("detkit/models/heads/rpn.py") == "backbones, necks, heads"
    assert tool.group_of("detkit/models/detectors/dense.py") == "detectors"
    assert tool.group_of("detkit/models/anchors.py") == "models core"
    assert tool.group_of("detkit/engine/trainer.py") == "trainer"
    assert tool.group_of("detkit/evaluation/draw.py") == "evaluation rest"
    with pytest.raises(ValueError, match="in no group"):
        tool.group_of("detkit/engine/ema.py")


def test_the_same_seed_draws_the_same_sample_from_each_group(tmp_path):
    meta = tmp_path / "detkit" / "models" / "anchors.py.meta"
    meta.parent.mkdir(parents=True)
    names = {f"detkit.models.anchors.x_f__mutmut_{i}": None for i in range(1, 21)}
    meta.write_text(json.dumps({"exit_code_by_key": names}))
    verdicts = tool.read_verdicts(tmp_path)
    assert verdicts["detkit.models.anchors.x_f__mutmut_3"] == ("detkit/models/anchors.py", None)
    groups = tool.population(verdicts)
    assert len(groups["models core"]) == 20 and groups["trainer"] == []
    first = tool.draw(groups, 5, seed=16)
    assert first == tool.draw(groups, 5, seed=16)
    assert len(first["models core"]) == 5 and set(first["models core"]) <= set(names)
    assert first["models core"] == sorted(first["models core"])
    assert first["trainer"] == []
    assert tool.draw(groups, 50, seed=1)["models core"] == sorted(names)  # a group smaller
    assert any(tool.draw(groups, 5, seed=s) != first for s in range(17, 20))


def test_total_is_the_share_weighted_estimate_with_finite_population_correction():
    # group a: 100 mutants, 5 of 10 sampled killed; group b: 300 mutants, 10 of 10 killed.
    # estimate 0.25 * 0.5 + 0.75 * 1.0 = 0.875; variance 0.25^2 * 0.25 / 9 * 90 / 99
    # = 0.0015783 (group b adds 0) -> half width 1.96 * 0.039728 = 0.077867
    groups = {"a": [f"a{i}" for i in range(100)], "b": [f"b{i}" for i in range(300)]}
    sample = {"a": groups["a"][:10], "b": groups["b"][:10]}
    codes = {m: (1 if m in groups["a"][:5] or m.startswith("b") else 0)
             for m in groups["a"] + groups["b"]}
    rows = tool.summary_rows(sample, groups, codes)
    assert rows[0][:5] == ("a", 100, 10, 5, 0.5)
    assert rows[1][:5] == ("b", 300, 10, 10, 1.0)
    name, size, n, killed, score, low, high = rows[2]
    assert (name, size, n, killed) == ("total", 400, 20, 15)
    assert score == pytest.approx(0.875)
    assert low == pytest.approx(0.875 - 0.077867, abs=1e-5)
    assert high == pytest.approx(0.875 + 0.077867, abs=1e-5)
