"""torchrun with two nodes on loopback (c10d rendezvous, gloo) matches one process.

``torchrun --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d --rdzv_endpoint 127.0.0.1:PORT``
is started twice on this machine, as two nodes of one job. Each node has local rank 0; the
rendezvous gives them global ranks 0 and 1. Node n writes into its own work dir ``node<n>``,
so the files show which global rank wrote: only rank 0 may.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from detkit.engine import distributed as du
from detkit.engine.checkpoint import load_checkpoint

from ._tiny import TinyDataset, TinyDetector, tiny_config, tiny_trainer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

NODE_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path[:0] = [{repo!r}, {here!r}]
    import torch
    import _tiny
    from detkit.engine import distributed as du
    out = sys.argv[1]
    node = int(sys.argv[2])
    cfg = _tiny.tiny_config(data={{"batch_size": 2}}, schedule={{"max_iters": 4}},
                            train={{"checkpoint_interval": 0}})
    trainer = _tiny.tiny_trainer(os.path.join(out, f"node{{node}}"), cfg, noise=False)
    info = du.init_distributed("cpu")
    sampler = trainer.loader.batch_sampler.sampler
    sampler.set_epoch(0)
    shard = list(iter(sampler))
    trainer.train()
    # evaluation: every rank scores its shard, the mean is all-reduced
    net = trainer.ema.module if trainer.ema is not None else trainer.model.module
    net.eval()
    data = _tiny.TinyDataset(16, noise=False)
    with torch.no_grad():
        hits = sum(float(net([data[i][0]])[0]["labels"][0] == data[i][1]["labels"][0])
                   for i in shard)
    total = torch.tensor([hits, float(len(shard))], dtype=torch.float64)
    torch.distributed.all_reduce(total)
    report = {{"rank": du.get_rank(), "world": du.get_world_size(),
               "local_rank": info.local_rank, "env_local_rank": int(os.environ["LOCAL_RANK"]),
               "device": str(info.device), "is_main": trainer.is_main, "shard": shard,
               "accuracy": float(total[0] / total[1])}}
    with open(os.path.join(out, f"report{{node}}.json"), "w") as f:
        json.dump(report, f)
    du.cleanup()
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_command(port: int, script: Path, out: Path, node: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
            "--nproc_per_node", "1", "--rdzv_backend", "c10d",
            "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "detkit-loopback",
            "--max_restarts", "0", str(script), str(out), str(node)]


def test_two_nodes_on_loopback_match_one_process(tmp_path: Path) -> None:
    # Same argument as test_distributed.py: global batch 4 in both runs, per-image mean
    # losses, no BatchNorm, so the weights agree up to float32 summation order.
    single = tmp_path / "single"
    cfg = tiny_config(schedule={"max_iters": 4}, train={"checkpoint_interval": 0})
    tiny_trainer(single, cfg, noise=False).train()
    script = tmp_path / "node.py"
    script.write_text(NODE_SCRIPT.format(repo=str(REPO), here=str(HERE)))
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    logs = [tmp_path / f"torchrun{node}.log" for node in range(2)]
    procs = []
    for node, log in enumerate(logs):
        with log.open("w") as sink:  # files, not pipes: neither node can block on its output
            procs.append(subprocess.Popen(_node_command(port, script, tmp_path, node), env=env,
                                          stdout=sink, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(timeout=420)  # rendezvous and shutdown take ~40 s, minutes on a loaded CPU
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log.read_text()[-3000:]
    reports = [json.loads((tmp_path / f"report{n}.json").read_text()) for n in range(2)]
    by_rank = {r["rank"]: r for r in reports}
    assert sorted(by_rank) == [0, 1] and all(r["world"] == 2 for r in reports)
    # device chosen by the local rank (0 on both nodes), not by the global rank
    assert all(r["local_rank"] == r["env_local_rank"] == 0 for r in reports)
    assert all(r["device"] == "cpu" for r in reports)
    # the sampler shards by global rank: rank r gets perm[r::2], disjoint, covering all 16
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(cfg["seed"])).tolist()
    assert by_rank[0]["shard"] == perm[0::2] and by_rank[1]["shard"] == perm[1::2]
    # only global rank 0 writes checkpoints and logs
    main_dir = tmp_path / f"node{reports.index(by_rank[0])}"
    other_dir = tmp_path / f"node{reports.index(by_rank[1])}"
    assert (main_dir / "last.pth").is_file() and (main_dir / "log.jsonl").is_file()
    assert not other_dir.exists() or not any(other_dir.iterdir())
    assert by_rank[0]["is_main"] and not by_rank[1]["is_main"]
    # weights equal the one-process run at the same global batch
    a, b = load_checkpoint(single / "last.pth"), load_checkpoint(main_dir / "last.pth")
    assert b["trainer"]["global_iter"] == 4 and len(b["rng"]) == 2
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, atol=1e-5, rtol=1e-4)
    # the distributed evaluation equals the one-process evaluation of the same weights
    net = TinyDetector()
    net.load_state_dict(a["ema"]["module"] if a.get("ema") else a["model"])
    net.eval()
    data = TinyDataset(16, noise=False)
    with torch.no_grad():
        acc = sum(float(net([data[i][0]])[0]["labels"][0] == data[i][1]["labels"][0])
                  for i in range(16)) / 16
    assert reports[0]["accuracy"] == reports[1]["accuracy"] == pytest.approx(acc)


def test_device_follows_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    # with CUDA, the device index is LOCAL_RANK (node-local), never the global RANK
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert du.resolve_device("cuda", 1) == torch.device("cuda", 1)
    assert chosen == [1]
