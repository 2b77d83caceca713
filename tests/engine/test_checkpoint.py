"""Atomic checkpoint writes, weights-only loading, RNG capture."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from detkit.engine import checkpoint as ck


def test_roundtrip_weights_only(tmp_path: Path) -> None:
    obj = {"model": {"w": torch.arange(3.0)}, "trainer": {"global_iter": 7}, "config": {"a": [1]}}
    ck.atomic_save(obj, tmp_path / "last.pth")
    back = ck.load_checkpoint(tmp_path / "last.pth")
    assert torch.equal(back["model"]["w"], torch.arange(3.0))
    assert back["trainer"] == {"global_iter": 7} and back["config"] == {"a": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temp file left


def test_crash_during_serialisation_keeps_previous(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pth"
    ck.atomic_save({"step": torch.tensor(1)}, path)

    def torn_save(obj, handle):  # half a file, then the process "dies"
        handle.write(b"PK\x03\x04 torn")
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        ck.atomic_save({"step": torch.tensor(2)}, path)
    assert ck.load_checkpoint(path)["step"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_crash_before_rename_keeps_previous(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pth"
    ck.atomic_save({"step": torch.tensor(1)}, path)

    def dying_fsync(fd):  # the new bytes are written but never renamed into place
        raise OSError("power lost")

    monkeypatch.setattr(ck.os, "fsync", dying_fsync)
    with pytest.raises(OSError, match="power lost"):
        ck.atomic_save({"step": torch.tensor(2)}, path)
    assert ck.load_checkpoint(path)["step"].item() == 1


def test_weights_only_rejects_arbitrary_objects(tmp_path: Path) -> None:
    torch.save({"bad": Path("x")}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="[Ww]eights only"):
        ck.load_checkpoint(tmp_path / "evil.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ck.load_checkpoint(tmp_path / "missing.pth")


def test_rng_capture_restore(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    state = ck.capture_rng_state(gen.get_state())
    ck.atomic_save({"rng": state}, tmp_path / "rng.pth")
    first = (random.random(), np.random.rand(), torch.rand(1).item(),
             torch.rand(1, generator=gen).item())
    gen2 = torch.Generator()
    ck.restore_rng_state(ck.load_checkpoint(tmp_path / "rng.pth")["rng"], gen2)
    again = (random.random(), np.random.rand(), torch.rand(1).item(),
             torch.rand(1, generator=gen2).item())
    assert first == again


class _Payload:
    """Unpickling this would create ``marker`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.faults
def test_a_pickle_with_code_is_refused_with_a_clear_error(tmp_path) -> None:
    """Issue 13: a rejected pickle showed a raw UnpicklingError traceback."""
    marker = tmp_path / "executed"
    bad = tmp_path / "evil.pth"
    torch.save({"model": _Payload(str(marker))}, bad)
    with pytest.raises(ck.CheckpointLoadError, match="refused to load .*evil.pth.*never runs"):
        ck.load_checkpoint(bad)
    assert not marker.exists()  # nothing was executed
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ck.CheckpointLoadError, match="junk.pth"):
        ck.load_checkpoint(tmp_path / "junk.pth")


@pytest.mark.faults
def test_a_full_disk_is_named_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    """Issue 13: a full disk surfaced as torch's 'unexpected pos' error."""
    path = ck.atomic_save({"step": torch.tensor(1)}, tmp_path / "last.pth")

    def full_disk(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 7")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ck.CheckpointWriteError, match="Is the disk full") as err:
        ck.atomic_save({"step": torch.tensor(2)}, path)
    assert "last.pth" in str(err.value) and "unexpected pos" in str(err.value)
    monkeypatch.undo()
    assert int(ck.load_checkpoint(path)["step"]) == 1  # the previous file, intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temp file left
