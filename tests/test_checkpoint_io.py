"""Checkpoint files: weights_only round trips, atomic and failing writes, bad files, async saves."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine import checkpoint as ckpt
from engine.checkpoint import (
    AsyncSaver,
    CheckpointError,
    SyncSaver,
    capture_rng_state,
    check_model_state,
    find_resume_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    to_plain,
)

ROOT = Path(__file__).resolve().parents[1]

# Subprocesses load engine/checkpoint.py alone (it imports nothing else from the engine):
# quick to start, and independent of the rest of the engine.
IMPORT_CHECKPOINT = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("checkpoint", {str(ROOT / "engine" / "checkpoint.py")!r})
checkpoint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checkpoint)
"""


def _draws() -> tuple[float, float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3)


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _training_state() -> tuple[nn.Module, torch.optim.Optimizer, dict]:
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=10)
    for _ in range(2):
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    state = {
        "model": model.state_dict(),
        "optimizers": [opt.state_dict()],
        "schedulers": [sched.state_dict()],
        "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(),
        "rng": capture_rng_state(),
        "progress": {"epoch": 1, "global_step": 2, "batch_idx": 3, "done": False, "ratio": 0.5},
        "config": {"trainer": {"precision": "32", "devices": [0, 1]}, "resume": None},
        "callbacks": {"ModelCheckpoint": {"best_k_models": {"a.ckpt": 0.9}, "kth": ("a", 1)}},
        "engine_version": "0.1.0",
    }
    return model, opt, state


def test_round_trip_with_weights_only(tmp_path: Path) -> None:
    model, opt, state = _training_state()
    path = tmp_path / "deep" / "er" / "last.ckpt"  # the folder is created
    save_checkpoint(state, path)
    raw = torch.load(path, weights_only=True)  # what a user gets without the engine
    loaded = load_checkpoint(path)
    assert raw.keys() == loaded.keys() == state.keys()
    for key in ("progress", "config", "callbacks", "engine_version", "scaler"):
        assert loaded[key] == state[key]
    assert loaded["model"]._metadata == state["model"]._metadata  # BatchNorm's version survives

    fresh = _model()
    check_model_state(fresh, loaded["model"], path)
    fresh.load_state_dict(loaded["model"])
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    fresh_sched = torch.optim.lr_scheduler.OneCycleLR(fresh_opt, max_lr=1e-2, total_steps=10)
    # Optimizer state after the scheduler is built: its constructor resets the lr.
    fresh_opt.load_state_dict(loaded["optimizers"][0])
    fresh_sched.load_state_dict(loaded["schedulers"][0])
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert fresh_sched.get_last_lr() == state["schedulers"][0]["_last_lr"]
    # One more identical step gives bit-identical weights.
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (fresh, fresh_opt)):
        m(x).square().mean().backward()
        o.step()
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rng_state_round_trip_reproduces_next_numbers(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves numpy with a cached gaussian
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.ckpt")
    expected = _draws()
    _draws()  # move every generator on
    restore_rng_state(load_checkpoint(tmp_path / "rng.ckpt")["rng"])
    got = _draws()
    assert got[:3] == expected[:3]
    assert torch.equal(got[3], expected[3])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rng_state_and_async_copy_from_the_gpu(tmp_path: Path) -> None:
    torch.cuda.manual_seed_all(5)
    torch.rand(2, device="cuda")  # CUDA is initialised, so its RNG is captured
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.ckpt")
    expected = torch.rand(4, device="cuda")
    torch.rand(4, device="cuda")
    # The trainer loads onto its device; the RNG states come back as CUDA tensors.
    restore_rng_state(load_checkpoint(tmp_path / "rng.ckpt", map_location="cuda")["rng"])
    assert torch.equal(torch.rand(4, device="cuda"), expected)

    saver = AsyncSaver()
    w = torch.zeros(1000, device="cuda")
    saver.save({"w": w}, tmp_path / "a.ckpt")
    w.add_(1)
    saver.close()
    loaded = load_checkpoint(tmp_path / "a.ckpt")
    assert loaded["w"].device.type == "cpu" and torch.equal(loaded["w"], torch.zeros(1000))


def test_to_plain_converts_numpy_paths_dataclasses_and_names_bad_values() -> None:
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        lr: float = 0.1
        out: Path = Path("runs")

    plain = to_plain({"a": np.arange(3), "b": np.float32(1.5), "c": Cfg(), "d": [np.int64(2)]})
    assert torch.equal(plain["a"], torch.arange(3))
    assert plain["b"] == 1.5 and type(plain["b"]) is float
    assert plain["c"] == {"lr": 0.1, "out": "runs"}
    assert plain["d"] == [2] and type(plain["d"][0]) is int
    with pytest.raises(TypeError, match=r"state\['x'\]\[1\] is a object"):
        to_plain({"x": [1, object()]})
    with pytest.raises(CheckpointError, match=r"cannot save checkpoint .*a\.ckpt: state\['f'\]"):
        save_checkpoint({"f": lambda: 0}, Path("a.ckpt"))


def _save_v(path: Path, v: float) -> None:
    save_checkpoint({"w": torch.full((1000,), v)}, path)


def _assert_holds(path: Path, v: float) -> None:
    assert torch.equal(load_checkpoint(path)["w"], torch.full((1000,), v))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_failed_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    _save_v(path, 1.0)
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # half a file is on disk when the error comes
        f.truncate(100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"last\.ckpt: .*No space left on device"):
        _save_v(path, 2.0)
    monkeypatch.undo()
    _assert_holds(path, 1.0)

    def no_rename(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*Permission denied"):
        _save_v(path, 3.0)
    monkeypatch.undo()
    _assert_holds(path, 1.0)

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointError, match=r"file/last\.ckpt"):
        _save_v(blocker / "last.ckpt", 1.0)


def test_real_write_error_from_file_size_limit(tmp_path: Path) -> None:
    # A genuine failing write, no mocks: RLIMIT_FSIZE makes write() fail with EFBIG.
    child = IMPORT_CHECKPOINT + textwrap.dedent(
        f"""
        import resource, signal, torch
        CheckpointError, save_checkpoint = checkpoint.CheckpointError, checkpoint.save_checkpoint
        path = {str(tmp_path / "last.ckpt")!r}
        save_checkpoint({{"w": torch.zeros(10)}}, path)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
        try:
            save_checkpoint({{"w": torch.ones(1 << 20)}}, path)
        except CheckpointError as e:
            print(e)
        """
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert "could not write checkpoint" in out.stdout and "last.ckpt" in out.stdout, out.stderr
    assert torch.equal(load_checkpoint(tmp_path / "last.ckpt")["w"], torch.zeros(10))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.ckpt does not exist; .*resume=null"):
        load_checkpoint(tmp_path / "nope.ckpt")

    good = tmp_path / "good.ckpt"
    _save_v(good, 1.0)
    data = good.read_bytes()
    for name, content in (
        ("half.ckpt", data[: len(data) // 2]),
        ("tail.ckpt", data[:-10]),
        ("empty.ckpt", b""),
        ("garbage.ckpt", os.urandom(4096)),
    ):
        (tmp_path / name).write_bytes(content)
        pattern = rf"checkpoint .*{name} is truncated or corrupt .*; delete it or pass resume="
        with pytest.raises(CheckpointError, match=pattern):
            load_checkpoint(tmp_path / name)

    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match=r"list\.ckpt holds a list, not a checkpoint dict"):
        load_checkpoint(tmp_path / "list.ckpt")

    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "pickled.ckpt")  # a whole module
    with pytest.raises(CheckpointError, match=r"pickled\.ckpt contains Python objects .*Linear"):
        load_checkpoint(tmp_path / "pickled.ckpt")


def test_check_model_state_lists_every_problem() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    other = nn.Sequential(nn.Linear(4, 16), nn.Linear(16, 2), nn.Linear(2, 2)).state_dict()
    other.pop("0.bias")
    with pytest.raises(CheckpointError) as info:
        check_model_state(model, other, "runs/x/last.ckpt")
    msg = str(info.value)
    assert "runs/x/last.ckpt" in msg and "another model or config" in msg
    assert "missing keys (in the model, not in the checkpoint): 0.bias" in msg
    assert "unexpected keys (in the checkpoint, not in the model): 2.weight, 2.bias" in msg
    assert "0.weight: checkpoint (16, 4) vs model (8, 4)" in msg
    assert "1.weight: checkpoint (2, 16) vs model (2, 8)" in msg
    assert "resume=null" in msg
    check_model_state(model, model.state_dict(), "ok.ckpt")  # a fit raises nothing


def test_find_resume_checkpoint_falls_back_with_warning(tmp_path: Path) -> None:
    assert find_resume_checkpoint(tmp_path / "missing") is None
    assert find_resume_checkpoint(tmp_path) is None

    for i, name in enumerate(["epoch=1.ckpt", "epoch=3.ckpt", "epoch=2.ckpt"]):
        _save_v(tmp_path / name, float(i))
        os.utime(tmp_path / name, (1000 + i, 1000 + i))  # epoch=2 is the newest
    (tmp_path / "epoch=2.ckpt").write_bytes(b"corrupt")
    (tmp_path / ".last.ckpt.123.abcd.tmp").write_bytes(b"half a write")
    with pytest.warns(RuntimeWarning, match=r"epoch=2\.ckpt is truncated or corrupt \(Unsupp"):
        assert find_resume_checkpoint(tmp_path) == tmp_path / "epoch=3.ckpt"  # the newest good one

    (tmp_path / "last.ckpt").write_bytes(b"truncated")
    with pytest.warns(RuntimeWarning, match=r"last\.ckpt is truncated.*Resuming from .*epoch=3"):
        assert find_resume_checkpoint(tmp_path) == tmp_path / "epoch=3.ckpt"
    assert not (tmp_path / ".last.ckpt.123.abcd.tmp").exists()  # stale temp files are removed

    _save_v(tmp_path / "last.ckpt", 9.0)
    assert find_resume_checkpoint(tmp_path) == tmp_path / "last.ckpt"

    for p in tmp_path.glob("*.ckpt"):
        p.write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"no loadable checkpoint in .*resume=null"):
        find_resume_checkpoint(tmp_path)


def _gated_save(monkeypatch) -> threading.Event:
    """Make background writes wait for the returned event."""
    gate = threading.Event()
    real = ckpt.save_checkpoint

    def save(state, path):
        assert gate.wait(10)
        real(state, path)

    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    return gate


def test_async_saver_writes_the_state_as_it_was_at_save(tmp_path: Path, monkeypatch) -> None:
    gate = _gated_save(monkeypatch)
    saver = AsyncSaver()
    w = torch.zeros(4)
    state = {"w": w, "nested": {"steps": [w]}, "step": 1}
    saver.save(state, tmp_path / "a.ckpt")
    w.add_(1)  # training goes on while the write waits
    state["step"] = 2
    gate.set()
    saver.wait()
    loaded = load_checkpoint(tmp_path / "a.ckpt")
    assert torch.equal(loaded["w"], torch.zeros(4))
    assert torch.equal(loaded["nested"]["steps"][0], torch.zeros(4))
    assert loaded["step"] == 1
    saver.close()


def test_async_saver_second_save_waits_for_the_first(tmp_path: Path, monkeypatch) -> None:
    gate = _gated_save(monkeypatch)
    saver = AsyncSaver()
    saver.save({"v": 1}, tmp_path / "a.ckpt")
    second = threading.Thread(target=saver.save, args=({"v": 2}, tmp_path / "b.ckpt"))
    second.start()
    second.join(0.3)
    assert second.is_alive() and not (tmp_path / "a.ckpt").exists()  # blocked on the first
    gate.set()
    second.join(10)
    assert not second.is_alive() and load_checkpoint(tmp_path / "a.ckpt") == {"v": 1}
    saver.close()  # awaits the second write
    assert load_checkpoint(tmp_path / "b.ckpt") == {"v": 2}


def test_async_saver_surfaces_background_errors(tmp_path: Path, monkeypatch) -> None:
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    saver = AsyncSaver()
    monkeypatch.setattr(torch, "save", disk_full)
    saver.save({"v": 1}, tmp_path / "a.ckpt")  # returns; the error comes from the thread
    with pytest.raises(CheckpointError, match=r"a\.ckpt: .*No space left on device"):
        saver.wait()
    saver.save({"v": 2}, tmp_path / "b.ckpt")
    with pytest.raises(CheckpointError, match=r"b\.ckpt"):
        saver.close()
    assert list(tmp_path.iterdir()) == []


def test_sync_saver_has_the_same_interface(tmp_path: Path) -> None:
    saver = SyncSaver()
    saver.save({"v": 1}, tmp_path / "a.ckpt")
    assert load_checkpoint(tmp_path / "a.ckpt") == {"v": 1}  # written before save returns
    saver.wait()
    saver.close()


SAVE_LOOP = (
    IMPORT_CHECKPOINT
    + """
import torch
save_checkpoint = checkpoint.save_checkpoint
path, step = sys.argv[1], int(sys.argv[2])
while True:
    save_checkpoint({"step": step, "w": torch.full((4_000_000,), float(step))}, path)
    print(step, flush=True)
    step += 1
"""
)


def test_sigkill_during_writes_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    """Kill a process that saves 16 MB checkpoints in a loop at random instants (seeded)."""
    path = tmp_path / "last.ckpt"
    rng = random.Random(0)
    step, kills_mid_write = 0, 0
    for _ in range(6):
        args = [sys.executable, "-c", SAVE_LOOP, str(path), str(step)]
        with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as proc:
            first = proc.stdout.readline()  # torch imported, one checkpoint written
            assert first, "the saving subprocess died before its first save"
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
            reported = [int(line) for line in [first, *proc.stdout.read().split()]]
        kills_mid_write += any(p.name.endswith(".tmp") for p in tmp_path.iterdir())

        state = load_checkpoint(path)
        # The file holds the last reported step, or the next one if the kill came between
        # the rename and the print; never a mix of two steps.
        assert state["step"] in (reported[-1], reported[-1] + 1)
        assert torch.equal(state["w"], torch.full((4_000_000,), float(state["step"])))
        assert {p.name for p in tmp_path.iterdir() if not p.name.endswith(".tmp")} == {path.name}
        assert find_resume_checkpoint(tmp_path) == path  # and it cleans the temp files
        assert [p.name for p in tmp_path.iterdir()] == [path.name]
        step = state["step"] + 1
    assert kills_mid_write >= 1  # the interesting case did happen
