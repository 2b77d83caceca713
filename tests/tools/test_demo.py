"""tools/demo.py (what `make demo` runs), shortened: train, evaluate, draw, report paths."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _demo():
    spec = importlib.util.spec_from_file_location("detkit_demo_tool", REPO / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_path_end_to_end(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "demo"
    code = _demo().main([
        "--work-dir", str(work), "--images", "2", "--no-progress",
        f"data.synthetic.out_dir={tmp_path / 'syn'}", "data.synthetic.num_images=10",
        "data.synthetic.image_size=64", "data.img_size=64", "data.batch_size=4",
        "schedule.max_iters=3", "schedule.warmup_iters=1", "eval.interval=1",
    ])
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((work / "test" / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class"} <= set(metrics)
    assert f"metrics:      {work / 'test' / 'metrics.json'}" in out
    assert (work / "loss.png").is_file() and (work / "test" / "pr_curves.png").is_file()
    drawn = sorted(p.suffix for p in (work / "drawn").iterdir())
    assert drawn.count(".json") == 2 and len(drawn) == 4  # 10 images: 2 in val; picture + JSON each
