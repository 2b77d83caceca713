"""Config loading: one base level, typed overrides, clear errors naming the nearest key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from detkit.config import (
    ConfigError,
    apply_overrides,
    config_diff,
    defaults,
    dump_config,
    explicit_config,
    load_config,
    nearest_key,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_explicit_config_holds_only_what_the_files_and_overrides_set(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", "optim:\n  base_lr: 0.01\nmodel:\n  type: dense_detector\n")
    leaf = _write(tmp_path / "leaf.yaml", "base: base.yaml\noptim:\n  base_lr: 0.02\n")
    assert explicit_config(leaf, ["data.batch_size=4", "model.neck=ssh"]) == {
        "optim": {"base_lr": 0.02}, "model": {"type": "dense_detector", "neck": "ssh"},
        "data": {"batch_size": 4}}
    with pytest.raises(ConfigError, match="unknown config key"):
        explicit_config(leaf, ["optim.base_rl=1"])


def test_base_merge_and_typed_overrides(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", "optim:\n  base_lr: 0.01\n  momentum: 0.8\n"
                                   "model:\n  type: dense_detector\n  neck: fpn\n")
    leaf = _write(tmp_path / "leaf.yaml", "base: base.yaml\noptim:\n  base_lr: 0.02\n")
    cfg = load_config(leaf, ["data.batch_size=4", "optim.weight_decay=1e-3",
                             "model.neck_channels=64", "data.multiscale.sizes=[320, 352]",
                             "train.ema.enabled=true"])
    assert cfg["optim"]["base_lr"] == 0.02  # leaf wins
    assert cfg["optim"]["momentum"] == 0.8  # from the base
    assert cfg["optim"]["nesterov"] is False  # schema default
    assert cfg["data"]["batch_size"] == 4 and isinstance(cfg["data"]["batch_size"], int)
    assert cfg["optim"]["weight_decay"] == 0.001  # YAML "1e-3" is a string; read as float
    assert cfg["model"] == {"type": "dense_detector", "neck": "fpn", "neck_channels": 64}
    assert cfg["data"]["multiscale"]["sizes"] == [320, 352]
    assert cfg["train"]["ema"]["enabled"] is True


def test_model_type_change_replaces_model_section(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", "model:\n  type: dense_detector\n  neck: fpn\n")
    leaf = _write(tmp_path / "leaf.yaml",
                  "base: base.yaml\nmodel:\n  type: thundernet_lite\n  use_sam: false\n")
    assert load_config(leaf)["model"] == {"type": "thundernet_lite", "use_sam": False}


def test_unknown_key_in_file_names_nearest(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", "optim:\n  base_lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.base_lrr' \(in c.yaml\); "
                                          r"did you mean 'optim.base_lr'\?"):
        load_config(cfg)


def test_unknown_override_names_nearest(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", "seed: 1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.ema.decy' \(override "
                                          r"'train.ema.decy=0.9'\); did you mean "
                                          r"'train.ema.decay'\?"):
        load_config(cfg, ["train.ema.decy=0.9"])
    assert nearest_key("schedule.warmup_iter") == "schedule.warmup_iters"


def test_wrong_types_rejected(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", "data:\n  batch_size: eight\n")
    with pytest.raises(ConfigError, match="'data.batch_size' expects int, got str 'eight'"):
        load_config(cfg)
    ok = _write(tmp_path / "ok.yaml", "seed: 1\n")
    with pytest.raises(ConfigError, match="'optim.base_lr' expects float, got str 'fast'"):
        load_config(ok, ["optim.base_lr=fast"])
    with pytest.raises(ConfigError, match="'train.amp' expects bool, got int 1"):
        load_config(ok, ["train.amp=1"])
    with pytest.raises(ConfigError, match=r"'optim.type' must be one of \['sgd', 'adamw', "
                                          r"'adabound'\], got 'adam'"):
        load_config(ok, ["optim.type=adam"])
    with pytest.raises(ConfigError, match="'data.batch_size' expects int, got float 2.5"):
        load_config(ok, ["data.batch_size=2.5"])
    with pytest.raises(ConfigError, match="'optim' is a section"):
        load_config(ok, ["optim=3"])
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        load_config(ok, ["optim.base_lr"])


def test_missing_base_file(tmp_path: Path) -> None:
    leaf = _write(tmp_path / "leaf.yaml", "base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"base config 'nowhere.yaml' named in .*leaf.yaml "
                                          r"not found"):
        load_config(leaf)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_two_level_base_rejected(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "seed: 1\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\nseed: 2\n")
    leaf = _write(tmp_path / "c.yaml", "base: b.yaml\nseed: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml -> b.yaml -> a.yaml: base configs may be "
                                          r"one level deep only"):
        load_config(leaf)


def test_yaml_syntax_error_is_reported_as_such(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", "optim: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML syntax error in .*c.yaml"):
        load_config(cfg)


def test_dump_roundtrip(tmp_path: Path) -> None:
    cfg = apply_overrides(defaults(), ["seed=5", "model.type=thundernet_lite"])
    dump_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_comment_every_field(path: Path) -> None:
    cfg = load_config(path)
    assert cfg["model"]["type"] in ("dense_detector", "thundernet_lite")
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*([A-Za-z_]\w*:|- )", line) and not line.lstrip().startswith("base:"):
            prev = lines[i - 1].strip() if i else ""
            assert prev.startswith("#"), f"{path.name}:{i + 1} has no comment above: {line!r}"
    assert yaml.safe_load(path.read_text())  # plain YAML


def test_config_diff_names_changed_keys() -> None:
    a = defaults()
    b = apply_overrides(a, ["optim.base_lr=0.5", "train.ema.decay=0.9", "model.neck=ssh"])
    assert config_diff(a, b) == ["model", "optim.base_lr", "train.ema.decay"]
    assert config_diff(a, a) == []


@pytest.mark.faults
@pytest.mark.parametrize("override, message", [
    ("schedule.warmup_factor=-0.1", "'schedule.warmup_factor' must be in (0, 1], got -0.1"),
    ("schedule.gamma=-0.5", "'schedule.gamma' must be in (0, 1], got -0.5"),
    ("optim.weight_decay=-1e-4", "'optim.weight_decay' must be in [0, inf), got -0.0001"),
    ("train.log_interval=0", "'train.log_interval' must be in [1, inf), got 0"),
    ("train.checkpoint_interval=-1", "'train.checkpoint_interval' must be in [0, inf), got -1"),
    ("data.img_size=0", "'data.img_size' must be in [32, 8192], got 0"),
    ("data.img_size=7", "'data.img_size' must be in [32, 8192], got 7"),
    ("seed=-1", "'seed' must be in [0, 4294967295], got -1"),
    ("threads=0", "'threads' must be in [1, inf), got 0"),
    ("optim.betas=[0.9,1.0]", "'optim.betas' must be in [0, 1), got 1.0"),
    ("optim.base_lr=nan", "'optim.base_lr' must be in (0, inf), got nan"),
])
def test_out_of_range_values_rejected(tmp_path: Path, override: str, message: str) -> None:
    """Issue 13: e.g. a negative gamma gave a negative LR (loss 1.73 -> 3.6), log_interval=0
    a ZeroDivisionError after step 1."""
    path = tmp_path / "c.yaml"
    path.write_text("model: {type: dense_detector}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [override])
    assert message in str(err.value)


def test_snip_valid_ranges_load_with_an_open_upper_end(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "model: {type: thundernet_lite}\ndata:\n  multiscale:\n"
                  "    enabled: true\n    sizes: [256, 320]\n"
                  "    valid_ranges: [[0, 64], [32, .inf]]\n"
                  "test:\n  scales: [256, 320]\n  valid_ranges: [[0, 64], [32, .inf]]\n")
    cfg = load_config(path)
    assert cfg["data"]["multiscale"]["valid_ranges"] == [[0.0, 64.0], [32.0, float("inf")]]
    assert cfg["test"]["valid_ranges"] == [[0.0, 64.0], [32.0, float("inf")]]
    assert defaults()["data"]["multiscale"]["valid_ranges"] == []  # off by default
    dump_config(cfg, tmp_path / "resolved.yaml")  # .inf survives the round trip
    assert load_config(tmp_path / "resolved.yaml") == cfg
    with pytest.raises(ConfigError, match=r"'test.valid_ranges\[0\]\[1\]' expects float"):
        load_config(path, ["test.valid_ranges=[[0, big], [32, 64]]"])


_SNIP_ON = ["data.multiscale.enabled=true", "data.multiscale.sizes=[256,320]"]


@pytest.mark.parametrize("overrides, message", [
    (_SNIP_ON + ["data.multiscale.valid_ranges=[[0,64]]"],
     "'data.multiscale.valid_ranges' needs one [min, max] per entry of 'data.multiscale.sizes' "
     "(2 sizes [256, 320]), got 1"),
    (_SNIP_ON + ["data.multiscale.valid_ranges=[[0,64],[64,32]]"],
     "'data.multiscale.valid_ranges[1]': a valid range [min, max] needs 0 <= min < max, "
     "got [64.0, 32.0]"),
    (_SNIP_ON + ["data.multiscale.valid_ranges=[[-8,64],[32,64]]"],
     "'data.multiscale.valid_ranges[0]': a valid range [min, max] needs 0 <= min < max"),
    (_SNIP_ON + ["data.multiscale.valid_ranges=[[0,64,128],[32,64]]"],
     "'data.multiscale.valid_ranges[0]': a valid range must be [min, max], got [0.0, 64.0, 128.0]"),
    (["data.multiscale.sizes=[256,320]", "data.multiscale.valid_ranges=[[0,64],[32,.inf]]"],
     "'data.multiscale.valid_ranges' needs 'data.multiscale.enabled: true'"),
    (["data.multiscale.enabled=true", "data.multiscale.sizes=[320,320]",
      "data.multiscale.valid_ranges=[[0,64],[32,.inf]]"],
     "'data.multiscale.valid_ranges' needs distinct 'data.multiscale.sizes', got [320, 320]"),
    (["test.valid_ranges=[[0,64]]"],
     "'test.valid_ranges' needs one [min, max] per entry of 'test.scales' (0 sizes [])"),
    (_SNIP_ON + ["data.multiscale.valid_ranges=[[0,64],[32,.inf]]", "model.type=torchvision"],
     "'data.multiscale.valid_ranges' is read by detkit's detectors only"),
])
def test_snip_valid_range_errors_name_the_key(tmp_path: Path, overrides: list[str],
                                               message: str) -> None:
    path = _write(tmp_path / "c.yaml", "model: {type: dense_detector}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    assert message in str(err.value)
