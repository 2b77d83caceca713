"""detkit.presets: preset names, the checkpoint's stored config, tool argument splitting."""

from __future__ import annotations

import pytest

from detkit.config import ConfigError, load_config
from detkit.presets import (
    CONFIG_DIR,
    config_for_checkpoint,
    config_from_checkpoint,
    list_presets,
    resolve_config_path,
    split_cli_inputs,
)


def test_preset_names_resolve_to_the_config_files() -> None:
    assert resolve_config_path("dense_ssh_bccd") == CONFIG_DIR / "dense_ssh_bccd.yaml"
    assert resolve_config_path("dense_ssh_bccd.yaml") == CONFIG_DIR / "dense_ssh_bccd.yaml"
    assert resolve_config_path("thundernet_full") == CONFIG_DIR / "bench" / "thundernet_full.yaml"
    names = list_presets()
    assert "demo_synthetic" in names and "bccd_base" not in names
    with pytest.raises(ConfigError, match="no preset of that name; presets: .*dense_fpn_bccd"):
        resolve_config_path("dense_fpn_bcd")


def test_checkpoint_config_is_validated_and_completed() -> None:
    cfg = load_config(CONFIG_DIR / "demo_synthetic.yaml")
    stored = {k: v for k, v in cfg.items() if k != "test"}  # an older run without `test`
    got = config_from_checkpoint({"config": stored}, ["test.img_size=96"])
    assert got["test"]["img_size"] == 96 and got["model"] == cfg["model"]
    assert config_for_checkpoint({"config": stored}, "dense_fpn_bccd")["model"]["neck"] == "fpn"
    with pytest.raises(ConfigError, match="stores no config"):
        config_from_checkpoint({"model": {}})
    with pytest.raises(ConfigError, match="unknown config key 'optim.base_rl'"):
        config_from_checkpoint({"config": {**stored, "optim": {"base_rl": 1.0}}})


def test_split_cli_inputs(tmp_path) -> None:
    ckpt = tmp_path / "best.pth"
    ckpt.write_bytes(b"")
    assert split_cli_inputs([str(ckpt), "a.b=1"], 1) == (None, [str(ckpt)], ["a.b=1"])
    assert split_cli_inputs(["cfg.yaml", str(ckpt), "imgs", "x=2"], 2) == (
        "cfg.yaml", [str(ckpt), "imgs"], ["x=2"])
    odd = tmp_path / "a=b.pth"  # an existing file with '=' in its name is a path
    odd.write_bytes(b"")
    assert split_cli_inputs([str(odd)], 1) == (None, [str(odd)], [])
    with pytest.raises(ConfigError, match="expected \\[CONFIG\\] and 1 path"):
        split_cli_inputs(["a", "b", "c"], 1)
