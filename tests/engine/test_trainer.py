"""Trainer: exact resume after SIGKILL, non-finite loss guard, torchvision models unchanged."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from detkit.engine.checkpoint import load_checkpoint
from detkit.engine.distill import DistillationLoss
from detkit.engine.logging import read_jsonl
from detkit.engine.trainer import NonFiniteLossError
from detkit.models.detectors.protocol import DetkitDetector

from ._tiny import TinyDetector, tiny_config, tiny_trainer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path[:0] = [{repo!r}, {here!r}]
    import torch
    import _tiny
    work_dir, kill_at = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(int(sys.argv[3]))  # the parent's count: same float rounding
    trainer = _tiny.tiny_trainer(work_dir, _tiny.tiny_config())
    def after_step(losses):
        if trainer.state.global_iter == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    trainer.after_step = after_step
    trainer.train()
""")


def _run(script: Path, work_dir: Path, kill_at: int) -> int:
    # the subprocess runs with this process's thread count, whatever an earlier test set it to
    # (another thread count changes the float sums, and so the losses)
    proc = subprocess.run([sys.executable, str(script), str(work_dir), str(kill_at),
                           str(torch.get_num_threads())],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stderr[-2000:])
    return proc.returncode


def _losses(work_dir: Path) -> list[tuple[int, float]]:
    return [(r["iter"], r["loss"]) for r in read_jsonl(work_dir / "log.jsonl")
            if r["kind"] == "train"]


def test_resume_after_sigkill_gives_identical_losses(tmp_path: Path) -> None:
    # 16 images / batch 4 = 4 iterations per epoch; 10 iterations; the kill at iteration 5
    # lands inside epoch 1 (batch 1 of 4), so the resumed run must skip one consumed batch.
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(repo=str(REPO), here=str(HERE)))
    full, split = tmp_path / "full", tmp_path / "split"
    tiny_trainer(full, tiny_config()).train()  # uninterrupted reference, in this process
    assert _run(script, split, kill_at=5) == -9  # the subprocess died by SIGKILL
    assert [it for it, _ in _losses(split)] == [1, 2, 3, 4, 5]
    assert load_checkpoint(split / "last.pth")["trainer"]["global_iter"] == 5
    resumed = tiny_trainer(split, tiny_config())  # a fresh process state, as after a crash
    resumed.resume(split / "last.pth")
    resumed.train()
    a, b = _losses(full), _losses(split)
    print("uninterrupted:", [f"{v:.6f}" for _, v in a])
    print("killed+resumed:", [f"{v:.6f}" for _, v in b])
    assert [it for it, _ in a] == list(range(1, 11))
    assert a == b  # bitwise-equal float losses, step for step
    wa = load_checkpoint(full / "last.pth")
    wb = load_checkpoint(split / "last.pth")
    for key, value in wa["model"].items():
        assert torch.equal(value, wb["model"][key]), key
    for key, value in wa["ema"]["module"].items():
        assert torch.equal(value, wb["ema"]["module"][key]), key


def test_nonfinite_loss_is_skipped_and_counted(tmp_path: Path, monkeypatch) -> None:
    import detkit.engine.logging as logging_module

    bars: list[object] = []  # tiny_trainer passes use_tqdm=False: no progress bar is made
    monkeypatch.setattr(logging_module, "tqdm", lambda *a, **k: bars.append(a) or None)
    model = TinyDetector()
    model.nan_at = {2}  # forward call 2 = iteration 3
    cfg = tiny_config(schedule={"max_iters": 5}, train={"checkpoint_interval": 0})
    trainer = tiny_trainer(tmp_path, cfg, model=model)
    snapshots: list[torch.Tensor] = []
    trainer.after_step = lambda losses: snapshots.append(model.fc.weight.detach().clone())
    state = trainer.train()
    assert state.nonfinite_total == 1
    assert state.global_iter == 5
    assert torch.equal(snapshots[1], snapshots[2])  # iteration 3 changed no weight
    assert not torch.equal(snapshots[2], snapshots[3])  # iteration 4 trained again
    assert all(math.isfinite(p.sum().item()) for p in model.parameters())
    logged = [r["iter"] for r in read_jsonl(tmp_path / "log.jsonl") if r["kind"] == "train"]
    assert logged == [1, 2, 4, 5]
    assert bars == []


def test_consecutive_nonfinite_losses_stop_with_checkpoint(tmp_path: Path) -> None:
    model = TinyDetector()
    model.nan_at = {1, 2, 3}  # iterations 2, 3, 4 (1-based)
    cfg = tiny_config(schedule={"max_iters": 8}, train={"max_nonfinite": 3,
                                                         "checkpoint_interval": 0})
    trainer = tiny_trainer(tmp_path, cfg, model=model)
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row, the last at "
                                                  "iteration 4") as caught:
        trainer.train()
    assert f"checkpoint saved to {tmp_path / 'last.pth'}." in str(caught.value)
    ckpt = load_checkpoint(tmp_path / "last.pth")
    assert ckpt["trainer"]["global_iter"] == 4
    assert ckpt["trainer"]["nonfinite_total"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_torchvision_detector_trains_unchanged(tmp_path: Path) -> None:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                  num_classes=4, min_size=64, max_size=64)
    cfg = tiny_config(data={"batch_size": 2}, optim={"base_lr": 0.01, "base_batch_size": 2},
                      schedule={"warmup": "none"}, train={"ema": {"enabled": False}})
    trainer = tiny_trainer(tmp_path, cfg, n=4, model=model)
    images, targets = next(iter(trainer.loader))
    before = model.roi_heads.box_predictor.cls_score.weight.detach().clone()
    losses = trainer.train_step(images, targets)
    assert losses is not None
    names = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
    assert set(names) <= set(losses)
    # the total is the plain sum of torchvision's four named losses
    assert losses["loss"] == pytest.approx(sum(losses[k] for k in names), rel=1e-6)
    after = model.roi_heads.box_predictor.cls_score.weight
    assert not torch.equal(before, after)


class _DenseTiny(TinyDetector, DetkitDetector):
    """TinyDetector with the protocol's per-anchor class logits [B, 1, C] (dense family)."""

    distillation_kind = "dense"

    def head_logits(self, images: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack(images)
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))[:, None, 4:]

    def distillation_logits(self, images: list[torch.Tensor], targets: list) -> torch.Tensor:
        return self.head_logits(images)


def test_distillation_loss_is_added_with_weight_and_temperature(tmp_path: Path) -> None:
    torch.manual_seed(1)
    teacher = _DenseTiny().eval()
    trainer = tiny_trainer(tmp_path, tiny_config(), model=_DenseTiny(), noise=False)
    # the teacher a config's train.distill section would load from its checkpoint:
    trainer.loss = DistillationLoss(trainer.model, teacher, weight=0.5, temperature=2.0)
    images, targets = next(iter(trainer.loader))
    with torch.no_grad():
        s = trainer.model.head_logits(images)[:, 0]
        t = teacher.head_logits(images)[:, 0]
    # Hinton et al.: T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the 4 rows
    p_t = torch.softmax(t / 2.0, dim=1)
    kl = (p_t * (torch.log_softmax(t / 2.0, 1) - torch.log_softmax(s / 2.0, 1))).sum(1).mean()
    losses = trainer.train_step(images, targets)
    assert losses["loss_distill"] == pytest.approx(0.5 * 4.0 * kl.item(), rel=1e-5)
    assert losses["loss"] == pytest.approx(
        losses["loss_box"] + losses["loss_cls"] + losses["loss_distill"], rel=1e-6)


def test_distillation_needs_matching_families() -> None:
    with pytest.raises(ValueError, match="same family"):
        DistillationLoss(_DenseTiny(), TinyDetector())
    with pytest.raises(ValueError, match="same family"):
        DistillationLoss(TinyDetector(), _DenseTiny())


def test_resume_without_ema_in_checkpoint_starts_ema_from_resumed_weights(tmp_path: Path) -> None:
    plain = tiny_trainer(tmp_path / "a", tiny_config(train={"ema": {"enabled": False}},
                                                      schedule={"max_iters": 4}))
    plain.train()  # writes last.pth without an EMA entry
    resumed = tiny_trainer(tmp_path / "b", tiny_config(schedule={"max_iters": 6}))
    resumed.resume(tmp_path / "a" / "last.pth")
    model_state = resumed.model.state_dict()
    for key, value in resumed.ema.module.state_dict().items():
        assert torch.equal(value, model_state[key]), key
    assert resumed.ema.updates == 0


class _RecordingDetector(TinyDetector):
    """TinyDetector that records the image ids of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[int]] = []

    def forward(self, images, targets=None):  # type: ignore[override]
        if self.training and targets is not None:
            self.seen.append([int(t["image_id"]) for t in targets])
        return super().forward(images, targets)


def test_loop_epochs_lr_and_clipped_grad_norm_follow_the_formulas(tmp_path: Path) -> None:
    # 18 images, batches of 4 (last partial batch dropped): 18 // 4 = 4 iterations per epoch;
    # 10 iterations -> epochs 0, 0, 0, 0, 1, 1, 1, 1, 2, 2
    cfg = tiny_config(optim={"clip_grad_norm": 0.01, "base_lr": 0.5, "base_batch_size": 4,
                             "scale_lr": True},
                      schedule={"max_iters": 10, "warmup": "linear", "warmup_iters": 3,
                                "warmup_factor": 0.1, "decay": "cosine", "min_lr_ratio": 0.0},
                      train={"ema": {"enabled": False}})
    model = _RecordingDetector()
    trainer = tiny_trainer(tmp_path, cfg, n=18, model=model)
    clipped: list[float] = []
    trainer.after_step = lambda losses: clipped.append(float(torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))))
    trainer.train()
    records = [r for r in read_jsonl(tmp_path / "log.jsonl") if r["kind"] == "train"]
    assert [r["iter"] for r in records] == list(range(1, 11))
    assert [r["epoch"] for r in records] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    # every image at most once per epoch, 16 of the 18 in each full epoch, a new order
    # each epoch
    epochs = [sum(model.seen[e * 4:(e + 1) * 4], []) for e in range(2)]
    for ids in epochs:
        assert len(ids) == 16 and len(set(ids)) == 16 and set(ids) <= set(range(1, 19))
    assert epochs[0] != epochs[1]
    # lr = 0.5 (0.5 x 4 / 4, linear scaling) x factor: linear warmup 0.1 + 0.9 it / 3 for
    # it < 3, then 0.5 (1 + cos(pi (it - 3) / 7)) until max_iters 10 (0-based it)
    def expected_lr(it: int) -> float:
        if it < 3:
            return 0.5 * (0.1 + 0.9 * it / 3)
        return 0.5 * 0.5 * (1 + math.cos(math.pi * (it - 3) / 7))

    for r in records:
        assert r["lr"] == pytest.approx(expected_lr(r["iter"] - 1), rel=1e-9)
    # the logged norm is the one before clipping; the applied gradients have norm
    # min(norm, 0.01) (torch scales by 0.01 / (norm + 1e-6))
    assert len(clipped) == 10
    for r, after in zip(records, clipped, strict=True):
        assert r["grad_norm"] > 0.01
        assert after == pytest.approx(0.01 * r["grad_norm"] / (r["grad_norm"] + 1e-6), rel=1e-4)


@pytest.mark.parametrize("tau", [0.0, 2.0])
def test_ema_switch_averages_the_trained_weights(tmp_path: Path, tau: float) -> None:
    # after each step: ema = d ema + (1 - d) w, with d = 0.9 (tau 0) or
    # d_t = 0.9 (1 - exp(-t / 2)) (tau 2, t = 1, 2, 3); ema starts at the initial weights
    cfg = tiny_config(schedule={"max_iters": 3},
                      train={"ema": {"enabled": True, "decay": 0.9, "tau": tau}})
    trainer = tiny_trainer(tmp_path, cfg)
    expected = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    def after_step(losses: object) -> None:
        t = trainer.state.global_iter
        d = 0.9 if tau == 0 else 0.9 * (1 - math.exp(-t / tau))
        for k, w in trainer.model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * w
    trainer.after_step = after_step
    trainer.train()
    ema = trainer.ema.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(ema[k], v)
    # the averaged weights differ from the last trained ones
    assert any(not torch.allclose(ema[k], w) for k, w in trainer.model.state_dict().items())
    off = tiny_trainer(tmp_path / "off", tiny_config(train={"ema": {"enabled": False}}))
    assert off.ema is None


def test_checkpoint_stores_the_class_names_of_the_training_set(tmp_path: Path) -> None:
    from detkit.engine.inference import class_names_from_config

    trainer = tiny_trainer(tmp_path / "a", tiny_config(schedule={"max_iters": 1}), n=4)
    assert trainer.checkpoint_dict()["class_names"] is None  # TinyDataset names no classes
    trainer.loader.dataset.class_names = ("cell", "dot")  # as CocoDetection has them
    path = trainer.save("named.pth")
    ckpt = load_checkpoint(path)
    assert ckpt["class_names"] == ["cell", "dot"]
    # a config whose annotation files are gone still gets the names from the checkpoint
    moved = {"data": {"val": {"ann_file": str(tmp_path / "gone.json")}}}
    assert class_names_from_config(moved, ckpt) == ["cell", "dot"]
    with pytest.raises(ValueError, match="test.ann_file=PATH.json"):
        class_names_from_config(moved, {**ckpt, "class_names": None})


def test_evaluation_record_and_step_throughput(tmp_path: Path, monkeypatch) -> None:
    from detkit.engine import trainer as trainer_module
    from detkit.engine.logging import TrainLogger

    trainer = tiny_trainer(tmp_path, tiny_config(train={"checkpoint_interval": 0}))
    trainer.logger = TrainLogger(tmp_path, 10, use_tqdm=False)
    # evaluate(): the state's iteration and epoch, the training time rounded to 1 ms
    trainer.evaluator = lambda net: {"AP": 0.5}
    trainer.state.global_iter, trainer.state.epoch, trainer.state.train_seconds = 7, 2, 1.23456
    assert trainer.evaluate() == {"AP": 0.5}
    # one step of 4 images that took 0.25 s by the trainer's clock: 4 / 0.25 = 16 images/s
    trainer.state.global_iter, trainer.state.train_seconds = 0, 0.0
    trainer._start_epoch()
    images, targets = next(iter(trainer.loader))
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: 10.25)
    assert trainer._run_step(images, targets, t_last=10.0) == 10.25
    trainer.logger.close()
    assert trainer.images_per_s == 16.0 and trainer.state.train_seconds == 0.25
    records = read_jsonl(tmp_path / "log.jsonl")
    assert records[0] == {"kind": "eval", "iter": 7, "epoch": 2, "train_seconds": 1.235,
                          "AP": 0.5}
    assert records[1]["kind"] == "train" and records[1]["images_per_s"] == 16.0


class _StatefulSampler(torch.utils.data.Sampler):
    """The loader's sampler with a ``state_dict`` (as a user's sampler may have)."""

    def __init__(self, inner: torch.utils.data.Sampler, position: int) -> None:
        self.inner, self.position = inner, position
        self.restored: dict | None = None

    def __iter__(self):
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.restored = dict(state)


def test_resume_restores_a_sampler_state(tmp_path: Path) -> None:
    first = tiny_trainer(tmp_path / "a", tiny_config())
    batches = first.loader.batch_sampler
    batches.sampler = _StatefulSampler(batches.sampler, position=7)
    path = first.save("last.pth")
    ckpt = load_checkpoint(path)
    assert ckpt["sampler"] == {"position": 7}
    assert ckpt["scaler"] == {}  # the GradScaler's state: empty while AMP is off (CPU)
    second = tiny_trainer(tmp_path / "b", tiny_config())
    sampler = _StatefulSampler(second.loader.batch_sampler.sampler, position=0)
    second.loader.batch_sampler.sampler = sampler
    second.resume(path)
    assert sampler.restored == {"position": 7}
