"""DDP on CPU: two gloo processes launched by torchrun (or by the engine's own launcher).

Each fixture below is one launch of the small project in ``tests/ddp_scripts/ddpjob``; the tests
read what its ranks wrote (``rank<r>.json``, ``weights-rank<r>.pt``, checkpoints, summary.json).
A launch costs a few seconds of process start-up, so each one serves several tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import distributed as D

SCRIPTS = Path(__file__).resolve().parent / "ddp_scripts"

# 128 training samples in batches of 8 per rank (16 in one process), two micro-batches per
# optimizer step: 4 steps per epoch. Validation every 4 batches on 33 samples (odd, so the ranks'
# shards differ in size). The last rank asks to stop at the validation after step 6 (mid-epoch 1).
COMMON = [
    "trainer.max_epochs=3",
    "trainer.accelerator=cpu",
    "trainer.accumulate_grad_batches=2",
    "trainer.val_check_interval=4",
    "trainer.log_every_n_steps=1",
    "trainer.progress_bar=false",
    "checkpoint.every_n_train_steps=2",
    "model.stop_hook=on_validation_end",
    "model.stop_step=6",
    "wandb.mode=disabled",
    "output_dir=runs",
]
FINAL_STEP = 6


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "PET_", "TORCHELASTIC_"))}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(
        PYTHONPATH=os.pathsep.join([str(SCRIPTS), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        WANDB_SILENT="true",
    )
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m", *args]


def _job(*args: str) -> list[str]:
    """The project's own entry point; with trainer.devices=2 it starts the processes itself."""
    return [sys.executable, "-m", "ddpjob", *args]


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    proc.output = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    return proc


def _check(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.output[-6000:]


def _start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    # A session of its own: the test can signal the launcher alone. Output goes to a file, so a
    # chatty run can never block on a full pipe.
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant: torchrun starts each worker in a session of its own,
    so killing torchrun's process group would leave the workers running (on SLURM the step's
    cgroup takes them all)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_for(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {path.name} was written:\n{log.read_text()[-6000:]}")
        if time.monotonic() > deadline:
            _kill_tree(proc.pid)
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def _ranks(run_dir: Path, world_size: int = 2) -> list[dict[str, Any]]:
    return [json.loads((run_dir / f"rank{r}.json").read_text()) for r in range(world_size)]


def _weights(run_dir: Path, rank: int = 0) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / f"weights-rank{rank}.pt", weights_only=True)


# -- launches -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def one(work: Path) -> Path:
    """The reference: one process, batch 16 (what the two ranks' batches of 8 add up to)."""
    _check(_run(_job(*COMMON, "run_name=one", "data.batch_size=16"), work))
    return work / "runs" / "one"


@pytest.fixture(scope="module")
def two(work: Path) -> tuple[Path, str]:
    """Two processes through `trainer.devices=2`: the engine calls torch's elastic launcher."""
    proc = _run(_job(*COMMON, "run_name=two", "data.batch_size=8", "trainer.devices=2"), work)
    _check(proc)
    return work / "runs" / "two", proc.output


@pytest.fixture(scope="module")
def stops(work: Path) -> list[dict[str, Any]]:
    """Several short fits in one torchrun launch, each stopped (or failed) by one rank only."""
    _check(_run(_torchrun("ddpjob.stops", "stops"), work))
    return [json.loads((work / "stops" / f"stops-rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def sync(work: Path) -> list[dict[str, Any]]:
    """Fits that record every torch.distributed call, and stops one rank asks for (ddpjob/sync.py)."""
    _check(_run(_torchrun("ddpjob.sync", "sync"), work))
    return [json.loads((work / "sync" / f"sync-rank{r}.json").read_text()) for r in range(2)]


# -- one process vs two -------------------------------------------------------------------------


def test_two_processes_train_the_same_weights_as_one_process_with_the_global_batch(one: Path, two: tuple) -> None:
    run_dir, _ = two
    ref, ranks = _ranks(one, 1)[0], _ranks(run_dir)
    assert ref["global_step"] == ranks[0]["global_step"] == ranks[1]["global_step"] == FINAL_STEP
    w0, w1, w_ref = _weights(run_dir, 0), _weights(run_dir, 1), _weights(one)
    for name, ref_value in w_ref.items():
        assert torch.equal(w0[name], w1[name]), name  # DDP keeps the replicas identical, bit for bit
        # Not bit-exact: one process reduces the 16 per-sample gradients in one matmul; DDP sums two
        # 8-sample means over gloo and halves them. Same math, another float32 summation order
        # (measured differences ~1e-8 after 6 SGD steps).
        torch.testing.assert_close(w0[name], ref_value, rtol=1e-5, atol=1e-6, msg=name)
    # no_sync: 12 micro-batches, but gradients were all-reduced only at the 6 optimizer steps.
    assert ranks[0]["grad_syncs"] == ranks[1]["grad_syncs"] == FINAL_STEP


def test_validation_metrics_count_every_sample_once(one: Path, two: tuple) -> None:
    ref = _ranks(one, 1)[0]["callback_metrics"]
    for rank in _ranks(two[0]):
        m = rank["callback_metrics"]
        assert m["val_count"] == 33.0  # sum over ranks of the shard sizes (17 + 16): no padding duplicates
        assert m["val_max_index"] == 32.0
        assert m["val_acc"] == ref["val_acc"]  # torchmetrics' synced counts: exactly the 1-process value
        assert m["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-6)  # sample-weighted mean over ranks


def test_sync_dist_reductions_and_rank_zero_values_for_callbacks(two: tuple) -> None:
    for rank in _ranks(two[0]):
        m = rank["callback_metrics"]
        assert m["rank_mean"] == 0.5  # self.log(rank, sync_dist=True): mean of 0 and 1
        assert m["rank_max"] == 1.0  # reduce_fx="max", sync_dist=True at the epoch end
        # Logged without sync_dist, the value differs per rank; callbacks on every rank see rank 0's,
        # so checkpoint and early-stopping decisions cannot diverge.
        assert m["rank_unsynced_step"] == m["rank_unsynced_epoch"] == 0.0


def test_every_epoch_reshuffles_and_the_ranks_split_it(two: tuple) -> None:
    r0, r1 = (r["seen"] for r in _ranks(two[0]))
    assert len(r0["0"]) == len(r1["0"]) == 64  # a full epoch: half of the 128 samples each
    assert sorted(r0["0"] + r1["0"]) == list(range(128))  # disjoint shards that cover the data set
    assert len(r0["1"]) == 32  # stopped after 4 of epoch 1's 8 batches
    assert r0["1"] != r0["0"][:32] and set(r0["1"]) != set(r0["0"][:32])  # set_epoch: a new order


def test_per_rank_random_streams(one: Path, two: tuple) -> None:
    seeds = [r["rank_seed"] for r in _ranks(two[0])]
    assert seeds[0] == _ranks(one, 1)[0]["rank_seed"] == 42  # rank 0 keeps trainer.seed: same as 1 process
    assert seeds[1] not in (42, None)  # rank 1 draws its own dropout masks


def test_one_checkpoint_writer_and_rank_zero_output(two: tuple) -> None:
    run_dir, output = two
    r0, r1 = _ranks(run_dir)
    assert r1["saves"] == []  # rank 1 builds its state (RNG) but never writes
    expected = [[s, name] for s in (2, 4, 6) for name in (f"epoch={(s - 1) // 4}-step={s}.ckpt", "last.ckpt")]
    assert r0["saves"] == expected  # each file written once, at the save points
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch=1-step=6.ckpt", "last.ckpt"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["loop"]["world_size"] == 2 and len(ckpt["rng"]) == 2  # every rank's RNG state
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == FINAL_STEP
    assert r0["timer"]["samples"] == r1["timer"]["samples"] > 0  # the padded sampler: equal shares
    # The job's rate: both processes' samples over rank 0's training time.
    assert summary["samples_per_sec"] == pytest.approx(2 * r0["timer"]["samples"] / r0["timer"]["total"])
    assert summary["stop_reason"] == "rank_stop" and summary["stop_message"] == "stop requested on rank 1 only"
    assert output.count("final validation metrics:") == 1  # console output from rank 0 only
    assert output.count("bottleneck report:") == 1
    assert output.count("stopping: stop requested on rank 1 only") == 1


# -- agreement ----------------------------------------------------------------------------------


def test_a_stop_on_one_rank_stops_every_rank_at_the_same_step(two: tuple, stops: list[dict[str, Any]]) -> None:
    for rank in _ranks(two[0]):  # on_validation_end (mid-epoch) on rank 1 only
        assert rank["global_step"] == FINAL_STEP and rank["stop_reason"] == "rank_stop"
    # Under DDP a request waits for the next sync point: here a validation or an epoch's end.
    expected = {  # scenario: (global_step, epoch, batches into the epoch, stop_reason)
        "batch_end": (4, 1, 0, "rank_stop"),  # asked in step 3's on_train_batch_end: agreed at epoch end
        "mid_window": (4, 2, 0, None),  # should_stop in training_step at step 2: agreed at epoch end
        "epoch_end": (4, 1, 0, "rank_stop"),
        "epoch_start": (4, 1, 0, "rank_stop"),
        "val_end": (2, 0, 2, "rank_stop"),
        # NaN loss on rank 1 only in step 3: no per-step collective, so both ranks take the step and
        # find it at the epoch's end, before anything validates or saves the weights.
        "nonfinite": (4, 0, 4, "nonfinite_loss"),
    }
    for r in stops:
        got = {k: (r[k]["global_step"], r[k]["epoch"], r[k]["batches_done"], r[k]["stop_reason"]) for k in expected}
        assert got == expected, f"rank {r['rank']}"


def test_steps_between_sync_points_run_no_collective(sync: list[dict[str, Any]]) -> None:
    """2 epochs of 16 steps, logging every 5, no validation, the interval check once an hour."""
    for r in sync:
        assert r["count"]["global_step"] == 32
        assert r["count"]["grad_syncs"] == 32  # DDP's own gradient all-reduce (its reducer), once a step
        calls: dict[tuple[int, int], list[str]] = {}
        for epoch, batches, _step, verb in r["calls"]:
            calls.setdefault((epoch, batches), []).append(verb)
        inside = {key: verbs for key, verbs in calls.items() if 0 < key[1] < 16}  # not an epoch's start or end
        # Only the first step agrees (it measures the step time that sets the interval): logging
        # steps are rank 0's alone, and an hour's interval never comes.
        assert inside == {(0, 1): ["all_reduce"]}, f"rank {r['rank']}"
        # An epoch's start and end (and the fit's end) agree too, in a few collectives each.
        assert all(len(calls[key]) <= 4 for key in calls if key not in inside), calls


def test_stops_one_rank_asks_for_are_agreed_at_the_next_sync_point(sync: list[dict[str, Any]]) -> None:
    for r in sync:  # logging too sparse to help: only a validation or the epoch's end agrees
        # max_time on rank 1 only, reached at step 1: agreed at the end of epoch 0 (16 steps).
        assert (r["max_time"]["global_step"], r["max_time"]["epoch"], r["max_time"]["stop_reason"]) == (
            16,
            1,
            "max_time",
        )
        # EarlyStopping on rank 1 only: agreed at the end of the validation that triggered it.
        e = r["early_stopping"]
        assert (e["global_step"], e["batches_done"], e["stop_reason"]) == (5, 5, "early_stopping")


def test_a_signal_to_one_rank_stops_both_within_the_check_interval(sync: list[dict[str, Any]]) -> None:
    """Rank 1 sends itself SIGUSR1 at step 20 of 20 ms steps, SCAFFOLD_STOP_CHECK_S=0.3, logging sparse."""
    r0, r1 = (r["signal"] for r in sync)
    assert r0["global_step"] == r1["global_step"] and r0["stop_reason"] == r1["stop_reason"] == "preempted"
    assert r0["sync_every"] == r1["sync_every"] > 1  # steps between checks: derived alike on both ranks
    assert 20 < r0["global_step"] <= 20 + r0["sync_every"] + 1
    assert r1["delay_s"] < 1.0  # ~0.3 s interval; generous for a loaded machine
    assert r0["saved_step"] == r0["global_step"]  # last.ckpt holds the step both stopped after


def test_distenv_verbs(stops: list[dict[str, Any]]) -> None:
    for r in stops:
        v = r["verbs"]
        assert (v["sum"], v["mean"], v["max"], v["min"]) == (3.0, 1.5, 2.0, 1.0)
        assert v["any_rank1"] is True and v["any_none"] is False and v["input_unchanged"] is True
        assert v["broadcast"] == {"from": 0} and v["gather"] == [0, 10]


def test_sync_batchnorm_on_cpu_says_what_to_do(stops: list[dict[str, Any]]) -> None:
    for r in stops:
        assert "trainer.sync_batchnorm=false" in r["syncbn_error"]


# -- failures, kills and signals ----------------------------------------------------------------


def test_a_failing_rank_fails_the_job_quickly_with_its_traceback(work: Path) -> None:
    start = time.monotonic()
    proc = _run(_job(*COMMON, "run_name=crash", "data.batch_size=8", "trainer.devices=2", "model.raise_step=3"), work)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.output[-6000:]
    # Rank 0 waits in the gradient all-reduce for rank 1, whose exit closes the connection: it fails
    # at once (and a rank stuck elsewhere would be stopped by torchrun, or by SCAFFOLD_DIST_TIMEOUT).
    assert elapsed < 60
    assert "RuntimeError: deliberate failure on rank 1 at step 3" in proc.output
    assert "Traceback (most recent call last)" in proc.output and "in training_step" in proc.output
    assert "ddpjob.__main__ FAILED" in proc.output  # torchrun's summary of the failed ranks
    assert not (work / "runs" / "crash" / "rank0.json").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers through /proc")
def test_a_killed_run_resumes_to_the_same_weights(work: Path, two: tuple) -> None:
    run_dir = work / "runs" / "killed"
    args = (*COMMON, "run_name=killed", "data.batch_size=8")
    log = work / "killed.log"
    proc = _start(_torchrun("ddpjob", *args, "model.step_sleep=0.25"), work, log)
    _wait_for(run_dir / "checkpoints" / "last.ckpt", proc, log)
    time.sleep(0.3)
    _kill_tree(proc.pid)  # torchrun and both workers, with no chance to save
    proc.wait()
    time.sleep(0.2)  # let the kernel reap the workers too
    loop = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["loop"]
    assert 2 <= loop["global_step"] < FINAL_STEP and not (run_dir / "rank0.json").exists()

    _check(_run(_torchrun("ddpjob", *args, "resume=last"), work))
    ranks = _ranks(run_dir)
    assert ranks[0]["resumed_from"].endswith("last.ckpt") and ranks[0]["global_step"] == FINAL_STEP
    ref = _weights(two[0])
    for rank in (0, 1):  # bit-exact: the same arithmetic as the uninterrupted run
        got = _weights(run_dir, rank)
        for name in ref:
            assert torch.equal(got[name], ref[name]), (rank, name)


def test_a_mid_epoch_resume_keeps_each_ranks_partial_epoch_sums(work: Path, two: tuple) -> None:
    """Stopped mid-epoch 0 (step 2 of 4), resumed: the sync_dist epoch mean of a value that differs
    per rank is the uninterrupted run's, because each rank reloads its own partial sums."""
    run_dir = work / "runs" / "midstop"
    args = (*COMMON, "run_name=midstop", "data.batch_size=8")
    _check(_run(_torchrun("ddpjob", *args, "model.stop_step=2"), work))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (ckpt["loop"]["global_step"], ckpt["loop"]["batches_done"], ckpt["loop"]["epoch_done"]) == (2, 4, False)
    saved = [r["rank_epoch_mean"]["total"].item() for r in ckpt["results"]]
    assert saved == [0.0, 32.0]  # each rank's own: rank r logged r for 4 batches of 8 samples
    _check(_run(_torchrun("ddpjob", *args, "resume=last"), work))
    for rank in _ranks(run_dir):
        assert rank["resumed_from"].endswith("last.ckpt") and rank["global_step"] == FINAL_STEP
        assert rank["callback_metrics"]["rank_epoch_mean"] == 0.5  # rank 0's sums on both ranks: 0.25
    for rank in _ranks(two[0]):
        assert rank["callback_metrics"]["rank_epoch_mean"] == 0.5


def test_sigterm_stops_every_rank_after_the_same_step_and_exits_75(work: Path) -> None:
    from wandb_records import offline_run_dirs

    run_dir = work / "runs" / "term"
    args = (
        *COMMON,
        "run_name=term",
        "data.batch_size=8",
        "trainer.devices=2",
        "model.step_sleep=0.25",
        "wandb.mode=offline",
        "wandb.project=ddp-test",
    )
    log = work / "term.log"
    proc = _start(_job(*args), work, log)
    _wait_for(run_dir / "checkpoints" / "last.ckpt", proc, log)
    proc.send_signal(signal.SIGTERM)  # to the launcher only: it passes SIGTERM on to both workers
    proc.wait(timeout=90)
    assert proc.returncode == 75, log.read_text()[-6000:]
    r0, r1 = _ranks(run_dir)
    step = r0["global_step"]
    assert 2 <= step < FINAL_STEP and r1["global_step"] == step
    assert r0["stop_reason"] == r1["stop_reason"] == "preempted"
    assert r1["saves"] == [] and r0["saves"].count([step, "last.ckpt"]) == 1 and r0["saves"][-1] == [step, "last.ckpt"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["loop"]["global_step"] == step
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "preempted" and summary["status"] == "interrupted"
    assert summary["world_size"] == 2
    assert len(offline_run_dirs(work)) == 1  # one W&B run for the job, from rank 0


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_sigusr1_to_one_rank_stops_both_with_a_checkpoint_and_resumes_exactly(work: Path, two: tuple) -> None:
    run_dir = work / "runs" / "usr1"
    args = (*COMMON, "run_name=usr1", "data.batch_size=8")
    log = work / "usr1.log"
    proc = _start(_job(*args, "trainer.devices=2", "model.step_sleep=0.25"), work, log)
    _wait_for(run_dir / "checkpoints" / "last.ckpt", proc, log)
    os.kill(int((run_dir / "pid-rank1").read_text()), signal.SIGUSR1)  # rank 1 only, not the launcher
    proc.wait(timeout=90)
    assert proc.returncode == 75, log.read_text()[-6000:]
    r0, r1 = _ranks(run_dir)
    step = r0["global_step"]
    assert 2 <= step < FINAL_STEP and r1["global_step"] == step
    assert r0["stop_reason"] == r1["stop_reason"] == "preempted" and "SIGUSR1" in r0["stop_message"]
    assert r0["saves"][-1] == [step, "last.ckpt"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["loop"]["global_step"] == step

    _check(_run(_torchrun("ddpjob", *args, "resume=last"), work))
    assert _ranks(run_dir)[0]["global_step"] == FINAL_STEP
    ref = _weights(two[0])
    for rank in (0, 1):  # bit-exact: the same arithmetic as the uninterrupted run
        got = _weights(run_dir, rank)
        for name in ref:
            assert torch.equal(got[name], ref[name]), (rank, name)


# -- pieces, in this process --------------------------------------------------------------------


def test_sampler_shards_are_the_one_process_batches() -> None:
    B = 3
    one = list(D.ResumableSampler(20, True, 7, 0, 1))
    shards = [list(D.ResumableSampler(20, True, 7, r, 2)) for r in range(2)]
    for i in range(3):  # the ranks' batches i together are the 1-process batch i of twice the size
        both = shards[0][i * B : (i + 1) * B] + shards[1][i * B : (i + 1) * B]
        assert sorted(both) == sorted(one[2 * B * i : 2 * B * (i + 1)])
    padded = [list(D.ResumableSampler(21, False, 0, r, 2)) for r in range(2)]
    assert len(padded[0]) == len(padded[1]) == 11  # training: equal steps on every rank
    resumed = D.ResumableSampler(20, True, 7, 1, 2)
    resumed.start = 8  # a global position: 4 samples on each of the 2 ranks
    assert list(resumed) == shards[1][4:] and len(resumed) == 6


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
@pytest.mark.parametrize("samples", [1, 2, 3, 5, 7, 10, 11, 31])
def test_evaluation_batches_count_each_sample_once_and_are_as_many_on_every_rank(
    samples: int, batch_size: int, world: int
) -> None:
    ranks = [D.EvalBatchSampler(samples, batch_size, True, 3, r, world, drop_last=False) for r in range(world)]
    batches = [list(s) for s in ranks]
    assert len({len(b) for b in batches}) == 1  # every rank runs as many steps (collectives inside them)
    real = [s.real_batches for s in ranks]
    counted = sorted(i for b, n in zip(batches, real, strict=True) for batch in b[:n] for i in batch)
    assert counted == list(range(samples))  # each sample once, copies left out
    assert all(0 < len(batch) <= batch_size for b in batches for batch in b)
    copies = sum(len(b) - n for b, n in zip(batches, real, strict=True))
    if batch_size > 1 and samples >= world:
        assert copies == 0  # a copy only where no split can give every rank a sample
    else:
        assert copies == -samples % world if batch_size == 1 else world - samples
    assert all(n == len(b) or n == len(b) - 1 for b, n in zip(batches, real, strict=True))  # copies come last
    if world == 1:  # one process: the DataLoader's own batches
        order = list(D.ResumableSampler(samples, True, 3, 0, 1))
        assert batches[0] == [order[i : i + batch_size] for i in range(0, samples, batch_size)]
    dropped = [list(D.EvalBatchSampler(samples, batch_size, False, 0, r, world, drop_last=True)) for r in range(world)]
    full = samples // (batch_size * world)
    assert all(
        b == [list(range(i * batch_size * world + r, (i + 1) * batch_size * world, world)) for i in range(full)]
        for r, b in enumerate(dropped)
    )  # drop_last: whole global batches only, as in training


def test_uneven_evaluation_sets_run_every_collective_and_count_each_sample_once(work: Path) -> None:
    """3 processes; the data sets leave ranks short (ddpjob/uneven.py): no hang, the plain totals."""
    out = work / "uneven"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=3", "--standalone", "-m"]
    _check(_run([*cmd, "ddpjob.uneven", str(out)], work, timeout=240))
    ranks = [json.loads((out / f"uneven-rank{r}.json").read_text()) for r in range(3)]
    for case in zip(*ranks, strict=True):
        n = case[0]["samples"]
        values = [float(v) for v in range(1, n + 1)]
        expected = {"mean_epoch": sum(values) / n, "max": n, "min": 1.0, "sum": sum(values), "count": n}
        expected["metric_sum"] = sum(values)  # torchmetrics: the copies' updates undone
        for verb in ("val", "test"):
            # Without sync_dist each rank returns its own value; a rank whose only batch was a copy has none.
            own = [rank[verb].pop(f"{verb}_own", None) for rank in case]
            assert sum(v or 0 for v in own) == n and (None in own) == (n < 3), (n, own)
        for rank in case:
            for verb in ("val", "test"):
                got = {k.removeprefix(f"{verb}_"): v for k, v in rank[verb].items()}
                assert got == pytest.approx(expected), (n, verb)
            assert rank["val_batches"] == case[0]["val_batches"] and rank["test_batches"] == case[0]["test_batches"]
        gathered = [r["gathered"] for r in case]
        assert gathered[0] == gathered[1] == gathered[2]  # every all_gather met the other ranks' one
        assert sorted(v for r in case for v in r["predicted"]) == values  # copies are not returned
    one_sample = [r for r in ranks[2] if r["samples"] == 1][0]
    assert one_sample["predicted"] == [] and one_sample["val_batches"] == 1  # no sample: still one step


def test_seed_rank_and_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(5)
    D.seed_rank(D.DistEnv(rank=0, world_size=2), 5)
    assert torch.initial_seed() == 5  # rank 0 untouched
    D.seed_rank(D.DistEnv(rank=1, world_size=2), 5)
    assert torch.initial_seed() == 5 + 1_000_003
    monkeypatch.setenv("SCAFFOLD_DIST_TIMEOUT", "90")
    assert D.timeout_from_env().total_seconds() == 90
    monkeypatch.setenv("SCAFFOLD_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="SCAFFOLD_DIST_TIMEOUT"):
        D.timeout_from_env()
    monkeypatch.delenv("SCAFFOLD_DIST_TIMEOUT")
    assert D.timeout_from_env().total_seconds() == D.DEFAULT_TIMEOUT_S
    assert not D.DistEnv().active and D.DistEnv().any(True) is True  # single process: no-op verbs


def test_gpu_check_script_runs_its_checks_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ci/gpu-check needs a GPU; its Python half has a CPU mode, tested here (DDP: a 1-process gloo group)."""
    import importlib.util
    import socket

    path = Path(__file__).resolve().parents[1] / "ci" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert "bf16-mixed loss" in gpu_check.check_precision("cpu", tmp_path)
    assert "tensors equal" in gpu_check.check_checkpoint("cpu", tmp_path)
    assert "samples/s" in gpu_check.check_throughput("cpu", tmp_path)
    # The GPU-path checks that a CPU can run (a CPU GradScaler stands in for 16-mixed's).
    assert "weights and LR unchanged" in gpu_check.check_overflow("cpu", tmp_path / "overflow")
    assert "global_step 3" in gpu_check.check_none_window("cpu", tmp_path / "none")
    assert "randn in the step is bf16" in gpu_check.check_bf16_true("cpu", tmp_path / "bf16")
    assert "sync == async" in gpu_check.check_checkpoint_files("cpu", tmp_path / "files")
    assert "bit for bit" in gpu_check.check_resume("cpu", tmp_path / "resume")
    with pytest.raises(gpu_check.Skip):
        gpu_check.check_sync_audit("cpu", tmp_path)
    assert "one update per step" in gpu_check.check_manual_16_mixed("cpu", tmp_path / "manual")
    assert "resumed at step 10 of a 32-bit run" in gpu_check.check_resume_32_in_16("cpu", tmp_path / "r32")
    groups = gpu_check.DEFAULT_CHECKS + gpu_check.DDP_CHECKS + gpu_check.OFFLOAD_CHECKS + gpu_check.MULTI_GPU_CHECKS
    assert sorted(groups) == sorted(gpu_check.CHECKS) and len(groups) == len(gpu_check.CHECKS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in dict(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    ).items():
        monkeypatch.setenv(key, value)
    try:
        assert gpu_check.check_ddp_sync_dist("cpu", tmp_path / "sd") == "gloo: rank_plus_half 0.5, cpu_tensor 2.0"
        assert gpu_check.check_ddp("cpu", tmp_path).startswith("gloo, world size 1, DDP-wrapped")
    finally:
        D.teardown()
    assert subprocess.run(["bash", "-n", str(path.with_name("gpu-check"))]).returncode == 0
