"""FSDP2 on CPU (gloo): sharded training, sharded checkpoints, consolidation, elastic resume.

Each fixture is one launch of ``tests/ddp_scripts/ddpjob`` (see test_ddp.py). The runs share one
global batch of 12 over 96 samples (12 per process in one process, 6 each on two, 4 each on
three), two micro-batches per optimizer step: 4 steps per epoch, 2 epochs. A stop requested
after step 5 ends a run in the middle of epoch 1; the tests resume it on 1 and 3 processes.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from test_ddp import _check, _ranks, _run, _weights

from engine import distributed as D
from engine import fsdp as FSDP
from engine.checkpoint import find_resume_checkpoint

COMMON = [
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "trainer.gradient_clip_val=0.5",  # clipping over sharded gradients (DTensors)
    "trainer.accumulate_grad_batches=2",  # gradients stay local until a window's last micro-batch
    "trainer.log_every_n_steps=1",
    "trainer.progress_bar=false",
    "checkpoint.every_n_train_steps=2",
    "data.n_train=96",
    "wandb.mode=disabled",
    "output_dir=runs",
]
# 8 batches of 12 per epoch, two per optimizer step; a stop after step 5 ends a run in the middle of epoch 1.
GLOBAL_BATCH, STEPS_PER_EPOCH, STOP_STEP = 12, 4, 5
FSDP_ARGS = ["trainer.strategy=fsdp"]
STOP = ["model.stop_hook=on_train_batch_end", f"model.stop_step={STOP_STEP}"]
TOL = {"rtol": 1e-5, "atol": 1e-6}  # test_ddp's: the same math, another float32 summation order


def _torchrun(n: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--standalone", "-m", *args]


def _launch(work: Path, n: int, name: str, *args: str) -> Path:
    batch = f"data.batch_size={GLOBAL_BATCH // n}"
    cmd = _torchrun(n, "ddpjob", *COMMON, batch, f"run_name={name}", *args)
    if n == 1 and "trainer.strategy=fsdp" not in args:
        cmd = [sys.executable, "-m", "ddpjob", *COMMON, batch, f"run_name={name}", *args]
    _check(_run(cmd, work))
    return work / "runs" / name


def _copy_run(work: Path, src: str, dst: str) -> Path:
    shutil.copytree(work / "runs" / src / "checkpoints", work / "runs" / dst / "checkpoints")
    return work / "runs" / dst


def _order(epoch: int, seed: int = 42) -> list[int]:
    sampler = D.ResumableSampler(96, True, seed, 0, 1)  # the engine's sampler: 1 process, global order
    sampler.set_epoch(epoch)
    return list(sampler)


def _seen(run_dir: Path, world_size: int, epoch: int) -> list[int]:
    return [i for r in _ranks(run_dir, world_size) for i in r["seen"].get(str(epoch), [])]


def _assert_close(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], exact: bool = False) -> None:
    assert got.keys() == ref.keys()
    for name, value in ref.items():
        if exact:
            assert torch.equal(got[name], value), name
        else:
            torch.testing.assert_close(got[name], value, **TOL, msg=name)


# -- launches -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fsdp")


@pytest.fixture(scope="module")
def one(work: Path) -> Path:
    """The reference: one process, unsharded, batch 12."""
    return _launch(work, 1, "one")


@pytest.fixture(scope="module")
def fsdp2(work: Path) -> Path:
    """Two processes, sharded, batch 6 each."""
    return _launch(work, 2, "fsdp2", *FSDP_ARGS)


@pytest.fixture(scope="module")
def stopped(work: Path) -> Path:
    """Two sharded processes, stopped in the middle of epoch 1: its last.ckpt is a DCP folder."""
    return _launch(work, 2, "stopped", *FSDP_ARGS, *STOP)


# -- step 1: sharded training -------------------------------------------------------------------


def test_two_sharded_processes_train_the_weights_of_one_process(one: Path, fsdp2: Path) -> None:
    ref, ranks = _ranks(one, 1)[0], _ranks(fsdp2)
    assert ref["global_step"] == ranks[0]["global_step"] == ranks[1]["global_step"] == 2 * STEPS_PER_EPOCH
    w_ref = _weights(one)
    for rank in (0, 1):  # each rank's gathered (full) weights
        _assert_close(_weights(fsdp2, rank), w_ref)
    assert sorted(_seen(fsdp2, 2, 0)) == list(range(96))  # each rank trained on its own half
    for rank in ranks:  # accumulation: no reduce-scatter until each window's last micro-batch
        assert rank["sharded_grads"] == [False, True] * 2 * STEPS_PER_EPOCH


def test_each_process_holds_about_half_the_parameters_and_optimizer_state(one: Path, fsdp2: Path) -> None:
    full = _ranks(one, 1)[0]["local_bytes"]
    shards = [r["local_bytes"] for r in _ranks(fsdp2)]
    # Parameters and SGD momentum (387 floats each), split by rows: 210 and 177 floats per rank.
    assert full == 2 * 387 * 4 and shards == [2 * 210 * 4, 2 * 177 * 4]  # 54% and 46% of the unsharded bytes


def test_logged_metrics_under_fsdp_match_one_process(one: Path, fsdp2: Path) -> None:
    ref = _ranks(one, 1)[0]["callback_metrics"]
    for rank in _ranks(fsdp2):
        m = rank["callback_metrics"]
        assert m["rank_mean"] == 0.5  # sync_dist
        assert m["val_count"] == 33.0  # uneven validation shards (17 + 16), each sample once
        assert m["val_acc"] == ref["val_acc"]
        assert m["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)


# -- step 2: sharded checkpoints ----------------------------------------------------------------


def test_checkpoints_are_dcp_folders_with_a_weights_only_state(fsdp2: Path) -> None:
    ckpts = fsdp2 / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=1-step=8.ckpt", "last.ckpt"]  # top-1 kept, no temp
    last = ckpts / "last.ckpt"
    assert sorted(p.name for p in last.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "state.pt"]
    state = torch.load(last / "state.pt", weights_only=True)
    assert "model" not in state and state["loop"]["global_step"] == 8 and state["loop"]["world_size"] == 2
    assert state["loop"]["global_batch_size"] == GLOBAL_BATCH and len(state["rng"]) == 2
    assert find_resume_checkpoint(ckpts) == last


def test_consolidate_writes_one_ordinary_checkpoint(work: Path, fsdp2: Path) -> None:
    out = work / "fsdp2.ckpt"
    proc = _run(
        [sys.executable, "-m", "ddpjob.engine.consolidate", str(fsdp2 / "checkpoints" / "last.ckpt"), str(out)], work
    )
    _check(proc)
    assert "epoch 1, step 8" in proc.stdout
    ckpt = torch.load(out, weights_only=True)
    _assert_close(ckpt["state_dict"], _weights(fsdp2), exact=True)
    assert ckpt["model"] is ckpt["state_dict"] and ckpt["global_step"] == 8
    opt = ckpt["optimizers"][0]  # an ordinary optimizer state: keyed by position
    assert opt["param_groups"][0]["params"] == [0, 1, 2, 3] and sorted(opt["state"]) == [0, 1, 2, 3]
    sys.path.insert(0, str(Path(__file__).parent / "ddp_scripts"))
    from ddpjob.job import ToyClassifier

    model = ToyClassifier.load_from_checkpoint(out)
    _assert_close({k: v for k, v in model.state_dict().items()}, _weights(fsdp2), exact=True)
    bad = _run([sys.executable, "-m", "ddpjob.engine.consolidate", str(out), str(work / "x.ckpt")], work)
    assert bad.returncode == 1 and "is not a sharded checkpoint folder" in bad.stderr


def test_a_failed_save_leaves_the_previous_checkpoint_and_the_run_resumes(work: Path, fsdp2: Path) -> None:
    run_dir = work / "runs" / "badsave"
    proc = _run(
        _torchrun(2, "ddpjob", *COMMON, "data.batch_size=6", "run_name=badsave", *FSDP_ARGS, "model.bad_save_step=4"),
        work,
    )
    assert proc.returncode != 0 and "weights_only" in proc.output
    ckpts = run_dir / "checkpoints"
    # step 2 saved; step 4's shards were written, its state.pt was not: nothing of it remains.
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    assert torch.load(ckpts / "last.ckpt" / "state.pt", weights_only=True)["loop"]["global_step"] == 2
    _check(
        _run(_torchrun(2, "ddpjob", *COMMON, "data.batch_size=6", "run_name=badsave", *FSDP_ARGS, "resume=last"), work)
    )
    r0 = _ranks(run_dir)[0]
    assert r0["resumed_from"].endswith("last.ckpt") and r0["global_step"] == 8
    _assert_close(_weights(run_dir), _weights(fsdp2), exact=True)  # same world size: bit for bit


def test_a_crash_between_the_renames_is_recovered(work: Path, fsdp2: Path, tmp_path: Path) -> None:
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(fsdp2 / "checkpoints", ckpts)
    (ckpts / "last.ckpt").rename(ckpts / ".last.ckpt.1a2b3c4d.old")  # stepped aside, the new one never came
    partial = ckpts / ".last.ckpt.99999999.tmp"
    partial.mkdir()
    (partial / "__0_0.distcp").write_bytes(b"half")
    FSDP.recover(ckpts)
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=1-step=8.ckpt", "last.ckpt"]
    assert find_resume_checkpoint(ckpts) == ckpts / "last.ckpt"


def test_a_single_file_checkpoint_seeds_a_sharded_run(work: Path, stopped: Path, fsdp2: Path) -> None:
    seed = work / "stopped.ckpt"
    _check(
        _run(
            [sys.executable, "-m", "ddpjob.engine.consolidate", str(stopped / "checkpoints" / "last.ckpt"), str(seed)],
            work,
        )
    )
    run_dir = _launch(work, 2, "seeded", *FSDP_ARGS, f"resume={seed}")
    assert _ranks(run_dir)[0]["global_step"] == 8
    _assert_close(_weights(run_dir), _weights(fsdp2), exact=True)  # weights and momentum resharded exactly


# -- step 3: elastic resume ---------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 3])
def test_a_mid_epoch_checkpoint_resumes_on_another_number_of_processes(
    work: Path, stopped: Path, one: Path, processes: int
) -> None:
    state = torch.load(stopped / "checkpoints" / "last.ckpt" / "state.pt", weights_only=True)
    loop = state["loop"]
    # (a stop asked on one rank is agreed at the next sync point: at step 5 or soon after)
    assert (loop["epoch"], loop["epoch_done"]) == (1, False) and STOP_STEP <= loop["global_step"] < 8
    done = loop["batches_done"]  # global batches of epoch 1 trained before the stop
    assert 0 < done < 2 * STEPS_PER_EPOCH
    name = f"elastic{processes}"
    run_dir = _copy_run(work, "stopped", name)
    args = [*FSDP_ARGS, "resume=last"] if processes > 1 else ["resume=last"]  # one process reads the folder unsharded
    _launch(work, processes, name, *args)
    ranks = _ranks(run_dir, processes)
    assert all(r["global_step"] == 2 * STEPS_PER_EPOCH and r["world_size"] == processes for r in ranks)
    before = _seen(stopped, 2, 1)
    after = _seen(run_dir, processes, 1)
    assert before == [i for r in _ranks(stopped) for i in r["seen"]["1"]] and len(before) == done * GLOBAL_BATCH
    assert sorted(before + after) == list(range(96))  # every sample of the epoch exactly once
    assert set(after) == set(_order(1)[done * GLOBAL_BATCH :])  # the epoch's order, from where it stopped
    _assert_close(_weights(run_dir), _weights(one))


def test_a_changed_global_batch_mid_epoch_is_refused(work: Path, stopped: Path) -> None:
    run_dir = _copy_run(work, "stopped", "rebatched")
    proc = _run(
        _torchrun(2, "ddpjob", *COMMON, "data.batch_size=4", "run_name=rebatched", *FSDP_ARGS, "resume=last"), work
    )
    assert proc.returncode != 0
    assert "saved mid-epoch with a global batch of 12" in proc.output and "data.batch_size=6" in proc.output
    assert not (run_dir / "rank0.json").exists()


def test_a_ddp_checkpoint_resumes_on_three_processes(work: Path, one: Path) -> None:
    stopped = _launch(work, 2, "ddpstop", *STOP)
    run_dir = _copy_run(work, "ddpstop", "ddp3")
    _launch(work, 3, "ddp3", "resume=last")
    done = torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)["loop"]["batches_done"]
    after = _seen(run_dir, 3, 1)
    assert sorted(_seen(stopped, 2, 1) + after) == list(range(96)) and len(after) == 96 - done * GLOBAL_BATCH
    _assert_close(_weights(run_dir), _weights(one))


def test_config_keys_reach_the_trainer() -> None:
    from engine.config import ConfigError, load_config

    cfg = load_config(
        ["trainer.strategy=fsdp", "trainer.fsdp.wrap=[Linear]", "trainer.fsdp.cpu_offload=true"],
        path=False,
        exit_on_error=False,
    )
    assert cfg.trainer.strategy == "fsdp" and cfg.trainer.fsdp.wrap == ["Linear"] and cfg.trainer.fsdp.cpu_offload
    with pytest.raises(ConfigError, match="trainer.strategy"):
        load_config(["trainer.strategy=deepspeed"], path=False, exit_on_error=False)


# -- options, precision, manual optimization ----------------------------------------------------


@pytest.fixture(scope="module")
def options(work: Path) -> list[dict[str, Any]]:
    """Several short fits in one 2-process launch (ddpjob/fsdp_options.py), each rank's records."""
    _check(_run(_torchrun(2, "ddpjob.fsdp_options", "options"), work))
    return [torch.load(work / "options" / f"options-rank{r}.pt", weights_only=True) for r in range(2)]


def test_wrap_activation_checkpointing_and_resharding_options_keep_the_math(options: list[dict[str, Any]]) -> None:
    for ranks in options:
        ref = ranks["default"]
        assert ref["sharded"] == ["FSDPSequential", "FSDPToyClassifier"]  # each child with parameters, then the root
        _assert_close(ref["weights"], ranks["ddp"]["weights"])  # the same training as DDP
        opt = ranks["options"]  # wrap=[Linear], activation checkpointing, no reshard after forward
        assert opt["sharded"] == ["FSDPLinear", "FSDPLinear", "FSDPToyClassifier"]
        _assert_close(opt["weights"], ref["weights"], exact=True)  # recomputation gives the same numbers
        assert ranks["bad-wrap"]["error"].startswith("trainer.fsdp.wrap: no submodule of class Block; the model has")
        built = ranks["configure_model"]  # configure_model sharded its own blocks: kept, root added
        assert built["sharded"] == ["FSDPBuiltInConfigureModel", "FSDPLinear", "FSDPSequential"]
        assert "head.weight" in built["weights"] and built["global_step"] == 8
    for name in options[0]:
        if "weights" in options[0][name]:
            _assert_close(options[0][name]["weights"], options[1][name]["weights"], exact=True)  # ranks agree


def test_bf16_under_fsdp(options: list[dict[str, Any]]) -> None:
    ref = options[0]["default"]["weights"]
    mixed, true = options[0]["bf16-mixed"], options[0]["bf16-true"]
    assert mixed["dtypes"] == ["torch.float32"] and true["dtypes"] == ["torch.bfloat16"]  # kept weights
    for run in (mixed, true):  # bf16 compute: close to fp32 training, not equal
        for name, value in ref.items():
            torch.testing.assert_close(run["weights"][name], value, rtol=0, atol=0.05)
        assert 0 < max((run["weights"][k] - ref[k]).abs().max().item() for k in ref)
    assert "bf16-mixed" in options[0]["16-mixed"]["error"]


def test_manual_optimization_under_fsdp_matches_ddp(options: list[dict[str, Any]]) -> None:
    for ranks in options:  # two optimizers, toggling, manual_backward: the same steps as under DDP
        assert ranks["gan-fsdp"]["sharded"] == ["FSDPGAN", "FSDPSequential", "FSDPSequential"]
        assert ranks["gan-fsdp"]["global_step"] == ranks["gan-ddp"]["global_step"] == 16
        _assert_close(ranks["gan-fsdp"]["weights"], ranks["gan-ddp"]["weights"])


def test_validate_loads_a_sharded_checkpoint_into_a_fresh_module(options: list[dict[str, Any]]) -> None:
    for ranks in options:
        r = ranks["reload"]
        assert r["same"] == pytest.approx(r["fit"], rel=1e-6) and r["fresh"] == pytest.approx(r["fit"], rel=1e-6)
        # An iterable set with 3 batches on one rank and 2 on the other: no hang, every sample once.
        assert r["uneven"]["val_count"] == 17.0 and r["uneven"]["val_max_index"] == 16.0
        assert r["uneven"]["val_loss"] == pytest.approx(r["fit"], rel=1e-5)


def test_gpu_check_fsdp_step_runs_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ci/gpu-check's fsdp check (NCCL and bf16 on a GPU) in its CPU mode: a 1-process gloo group."""
    import importlib.util
    import socket

    path = Path(__file__).resolve().parents[1] / "ci" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in dict(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    ).items():
        monkeypatch.setenv(key, value)
    try:
        assert "gloo, world size 1, FSDP2 bf16-mixed" in gpu_check.check_fsdp("cpu", tmp_path)
        assert gpu_check.check_fsdp_targets("cpu", tmp_path / "targets").startswith("targets float32")
        for name in ("fsdp-offload-clip", "replicas", "usr1-nccl"):  # GPU-only: skipped with the reason
            with pytest.raises(gpu_check.Skip):
                gpu_check.CHECKS[name]("cpu", tmp_path / name)
    finally:
        D.teardown()


def test_the_sampler_resumes_at_a_global_position_on_any_process_count() -> None:
    order = list(D.ResumableSampler(24, True, 7, 0, 1))
    for world_size in (1, 2, 3, 4):
        shards = []
        for rank in range(world_size):
            sampler = D.ResumableSampler(24, True, 7, rank, world_size)
            sampler.start = 12  # 12 samples of the epoch trained, by however many processes
            shards.append(list(sampler))
            assert len(sampler) == len(shards[-1]) == 12 // world_size
        assert sorted(i for s in shards for i in s) == sorted(order[12:])  # the rest, each sample once
        assert [s[0] for s in shards] == order[12 : 12 + world_size]  # the next global batch, split by rank


def test_an_epoch_end_checkpoint_resumes_on_three_processes(work: Path, one: Path) -> None:
    stop = ["model.stop_hook=on_train_epoch_end", "model.stop_step=1", "checkpoint.every_n_train_steps=null"]
    stopped = _launch(work, 2, "epochstop", *FSDP_ARGS, *stop)  # saved by the epoch-end checkpoint
    loop = torch.load(stopped / "checkpoints" / "last.ckpt" / "state.pt", weights_only=True)["loop"]
    assert (loop["epoch"], loop["epoch_done"], loop["global_step"]) == (0, True, STEPS_PER_EPOCH)
    run_dir = _copy_run(work, "epochstop", "epoch3")
    _launch(work, 3, "epoch3", *FSDP_ARGS, "resume=last")
    assert sorted(_seen(run_dir, 3, 1)) == list(range(96)) and _seen(run_dir, 3, 0) == []  # epoch 1, whole
    _assert_close(_weights(run_dir), _weights(one))
