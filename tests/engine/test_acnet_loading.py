"""A checkpoint trained with ``model.acnet: true`` loads folded: load_detector (tools/test.py,
tools/export.py, ``detkit info``) and ``detkit.load(...).predict`` run the plain network, with
the unfolded network's detections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import detkit
from detkit.config import load_config
from detkit.engine.build import build_model_from_cfg
from detkit.engine.checkpoint import atomic_save
from detkit.engine.inference import letterbox_image, load_detector
from detkit.models.acnet import ACBlock, count_acblocks


def _checkpoint(tmp_path: Path) -> tuple[Path, dict, nn.Module]:
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({"images": [], "annotations": [],
                               "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    config = tmp_path / "tn.yaml"
    config.write_text(json.dumps({
        "device": "cpu", "data": {"val": {"ann_file": str(ann)}, "img_size": 96},
        "model": {"type": "thundernet_lite", "acnet": True, "score_threshold": 0.0}}))
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg["model"], 2)
    assert count_acblocks(model) == 21
    model.train()
    with torch.no_grad():  # move the BatchNorm statistics away from their start
        model.feature_map(torch.rand(2, 3, 96, 96))
    ckpt = atomic_save({"model": model.state_dict(), "config": cfg}, tmp_path / "best.pth")
    return ckpt, cfg, model.eval()


@pytest.fixture()
def _one_thread():
    # one thread for speed; the count is restored, as later tests compare runs made in this
    # process with runs in subprocesses bit for bit
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("_one_thread")
def test_loaded_acnet_checkpoint_is_folded_with_the_same_detections(tmp_path: Path) -> None:
    ckpt, cfg, model = _checkpoint(tmp_path)
    loaded = load_detector(cfg, ckpt, 2)
    assert count_acblocks(loaded.model) == 0
    assert not any(isinstance(m, ACBlock) for m in loaded.model.modules())
    image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    tensor, _ = letterbox_image(image, 96)
    with torch.no_grad():
        ref = model([tensor])[0]
        out = loaded.model([tensor])[0]
    assert len(ref["boxes"]) > 0
    torch.testing.assert_close(out["scores"], ref["scores"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["boxes"], ref["boxes"], atol=1e-3, rtol=0)
    det = detkit.load(ckpt)
    assert count_acblocks(det.loaded.model) == 0
    pred = det.predict(image, score_threshold=0.0)[0]
    np.testing.assert_allclose(pred.scores, ref["scores"].numpy(), atol=1e-5)
