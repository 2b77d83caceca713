"""Two-process gloo DDP on CPU matches one process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from detkit.engine.checkpoint import load_checkpoint
from detkit.engine.distributed import (
    DistInfo,
    convert_sync_bn,
    init_distributed,
    reduce_mean,
    wrap_ddp,
)

from ._tiny import TinyDetector, tiny_config, tiny_trainer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SCRIPT = textwrap.dedent("""
    import sys
    sys.path[:0] = [{repo!r}, {here!r}]
    import _tiny
    from detkit.engine import distributed as du
    cfg = _tiny.tiny_config(data={{"batch_size": 2}}, schedule={{"max_iters": 4}},
                            train={{"checkpoint_interval": 0}})
    trainer = _tiny.tiny_trainer(sys.argv[1], cfg, noise=False)
    assert du.get_world_size() == 2, du.get_world_size()
    trainer.train()
    du.cleanup()
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    # One process, batch 4 vs two processes, batch 2 each: DistributedSampler gives rank r the
    # items perm[r::2], so global batch b is perm[4b:4b+4] in both runs. TinyDetector's losses
    # are per-image means (no BatchNorm), and DDP averages gradients over ranks, so the
    # updates agree up to float32 summation order: tolerance atol=1e-5, rtol=1e-4 (observed
    # ~5e-7). The data carry no random noise here (each rank's RNG would draw different noise
    # per item).
    single = tmp_path / "single"
    cfg = tiny_config(schedule={"max_iters": 4}, train={"checkpoint_interval": 0})
    tiny_trainer(single, cfg, noise=False).train()
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT.format(repo=str(REPO), here=str(HERE)))
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / "ddp")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = [p.communicate(timeout=90) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    a = load_checkpoint(single / "last.pth")
    b = load_checkpoint(tmp_path / "ddp" / "last.pth")
    assert a["trainer"]["global_iter"] == b["trainer"]["global_iter"] == 4
    assert len(b["rng"]) == 2  # one RNG state per rank
    worst = 0.0
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, atol=1e-5, rtol=1e-4)
        worst = max(worst, (b["model"][key] - value).abs().max().item())
    torch.manual_seed(cfg["seed"])  # tiny_trainer seeds like this before building the model
    init = TinyDetector().state_dict()
    moved = max((a["model"][k] - init[k]).abs().max().item() for k in init)
    assert moved > 1e-3  # training changed the weights: the comparison is not vacuous
    print(f"max |w_ddp - w_single| = {worst:.3e}")


def test_single_process_helpers_are_identity() -> None:
    info = init_distributed("cpu")
    assert info == DistInfo(0, 1, 0, torch.device("cpu"))
    model = TinyDetector()
    assert wrap_ddp(model, info) is model
    assert reduce_mean({"loss": 2.5}, info.device) == {"loss": 2.5}


def test_sync_bn_on_cpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="sync_bn=true needs CUDA"):
        convert_sync_bn(torch.nn.BatchNorm2d(2), torch.device("cpu"))
