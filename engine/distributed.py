"""torch.distributed in a few verbs: each does nothing extra in a single process.

Processes come from `torchrun` (or from `launch`, which calls torch's own elastic launcher
when `trainer.devices > 1`). Rank, world size and the rendezvous come from the environment
that torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

Under SLURM, a job step of several tasks (`srun` with one task per GPU, the way Jean Zay and
other clusters document it) is read the same way: SLURM_PROCID, SLURM_LOCALID and
SLURM_STEP_NUM_TASKS give the ranks, the step's first node and a port derived from the job
id give the rendezvous (`adopt_slurm_env`). torchrun's variables win when both are set.

Environment knobs:
    SCAFFOLD_DIST_TIMEOUT   seconds a rank waits in a collective before it fails (default 1800).
                            A crashed rank fails the job at once (torchrun stops the others);
                            this bounds true hangs, e.g. one rank stuck on a dead filesystem.
    SCAFFOLD_STOP_CHECK_S   seconds of training between two checks that all ranks agree on a stop
                            (default 10): a signal (SLURM's USR1 120 s before the time limit, a
                            SIGTERM) that reaches one rank stops every rank within about this
                            long, plus one step and the checkpoint save. Logging steps, validation,
                            saves and epoch ends check too; between them a step runs no collective
                            of the engine's.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    get_worker_info,
)

from .config import ConfigError

SELF_LAUNCHED = "SCAFFOLD_SELF_LAUNCHED"  # set for the workers `launch` starts (not for torchrun's)
DEFAULT_STOP_CHECK_S = 10.0  # SLURM warns 120 s ahead: leaves ample time to reach the check and save
DEFAULT_TIMEOUT_S = 1800.0  # torch's gloo default; generous because prepare_data and rank-0 saves sit behind barriers


@dataclass
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    distributed: bool = False  # a process group is running (under torchrun, also with one process)

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when the verbs below talk to other processes (and the model is wrapped in DDP)."""
        return self.distributed or self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce a tensor over processes: sum, mean, max or min (returns a new tensor)."""
        if not self.active:
            return tensor
        out = tensor.clone()
        reduce_op = {
            "sum": dist.ReduceOp.SUM,
            "mean": dist.ReduceOp.SUM,
            "max": dist.ReduceOp.MAX,
            "min": dist.ReduceOp.MIN,
        }
        dist.all_reduce(out, op=reduce_op[op])
        return out / self.world_size if op == "mean" else out

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on any (stop decisions, preemption)."""
        if not self.active:
            return flag
        t = torch.tensor(float(flag), device=self.device)
        return bool(self.all_reduce(t, "max").item())

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every process (picklable objects: names, paths, metric dicts)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_object(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order, on every process."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_gather(self, tensor: torch.Tensor, group: Any = None, sync_grads: bool = False) -> torch.Tensor:
        """Every process's `tensor` (same shape on each), stacked: shape (world_size, *tensor.shape)."""
        tensor = tensor.contiguous()
        if sync_grads:  # differentiable: each process gets the gradient of its own slice back
            from torch.distributed.nn.functional import all_gather as all_gather_with_grad

            return torch.stack(all_gather_with_grad(tensor, group=group or dist.group.WORLD))
        size = dist.get_world_size(group) if group is not None else self.world_size
        out = [torch.empty_like(tensor) for _ in range(size)]
        dist.all_gather(out, tensor, group=group)
        return torch.stack(out)


def select_device(accelerator: str, local_rank: int) -> torch.device:
    if accelerator in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", gpu_index(local_rank, torch.cuda.device_count()))
    if accelerator == "cuda":
        raise ConfigError("trainer.accelerator=cuda but no CUDA GPU is visible; use trainer.accelerator=cpu")
    mps = getattr(torch.backends, "mps", None)
    if accelerator in ("auto", "mps") and mps is not None and mps.is_available():
        return torch.device("mps")
    if accelerator == "mps":
        raise ConfigError("trainer.accelerator=mps but MPS is not available; use trainer.accelerator=cpu")
    return torch.device("cpu")


def gpu_index(local_rank: int, gpus: int) -> int:
    """The GPU of the process with `local_rank` on its node: its own, never one another process uses.

    Two processes on one GPU would fail inside NCCL ("Duplicate GPU detected"); say what to change.
    An srun task started with ``--gpus-per-task`` sees only its own GPUs: local rank 3 of a node
    with one visible GPU uses ``cuda:0``.
    """
    if gpus and local_rank >= gpus and own_task_gpus():
        return local_rank % gpus
    if local_rank >= gpus:
        raise ConfigError(
            f"process {local_rank} on this node has no GPU of its own: {gpus} GPU(s) are visible. Start at most "
            f"{gpus} process(es) per node (trainer.devices={gpus}, torchrun --nproc_per_node={gpus}, or "
            f"--ntasks-per-node={gpus} under SLURM), or make more GPUs visible (CUDA_VISIBLE_DEVICES)"
        )
    return local_rank


def own_task_gpus() -> bool:
    """Whether this process is an srun task whose visible GPUs are its own (``--gpus-per-task``).

    Not under torchrun (TORCHELASTIC_RUN_ID): there, one task's processes share the node's GPUs.
    """
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env or slurm_tasks() == 0:
        return False
    return bool(env.get("SLURM_GPUS_PER_TASK"))


def timeout_from_env() -> timedelta:
    text = os.environ.get("SCAFFOLD_DIST_TIMEOUT", "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"SCAFFOLD_DIST_TIMEOUT={text!r} is not a number of seconds (e.g. 600)") from None
    return timedelta(seconds=seconds)


def stop_check_seconds() -> float:
    """SCAFFOLD_STOP_CHECK_S: the longest stretch of training between two stop agreements."""
    text = os.environ.get("SCAFFOLD_STOP_CHECK_S", "")
    try:
        seconds = float(text) if text else DEFAULT_STOP_CHECK_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"SCAFFOLD_STOP_CHECK_S={text!r} is not a positive number of seconds (e.g. 10)")
    return seconds


def backend_for(device: torch.device, cpu_collectives: bool = False) -> str:
    """The process group's backend: NCCL on CUDA, gloo otherwise. `cpu_collectives` adds gloo for
    CPU tensors on CUDA runs: FSDP's cpu_offload keeps gradients on the CPU, and clipping them by
    norm all-reduces there (NCCL alone fails: pytorch#148532)."""
    if device.type != "cuda":
        return "gloo"
    return "cpu:gloo,cuda:nccl" if cpu_collectives else "nccl"


def setup(accelerator: str, timeout: timedelta | None = None, cpu_collectives: bool = False) -> DistEnv:
    """Join the process group that torchrun describes in the environment (if any).

    Under torchrun the group starts even for one process, so `torchrun --nproc_per_node=1`
    runs the real DDP code path. NCCL on CUDA, gloo otherwise (`backend_for`); `timeout` (default
    ``SCAFFOLD_DIST_TIMEOUT``) bounds how long a rank waits for the others in a collective.
    Calling it again in the same process returns the same environment.
    """
    adopt_slurm_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(accelerator, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if (world_size > 1 or under_launcher()) and not dist.is_initialized():
        dist.init_process_group(
            backend=backend_for(device, cpu_collectives),
            timeout=timeout or timeout_from_env(),
            device_id=device if device.type == "cuda" else None,
        )
    return DistEnv(
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        device=device,
        distributed=dist.is_available() and dist.is_initialized(),
    )


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def under_launcher() -> bool:
    """Whether a launcher (torchrun, or srun with one task per process) started this process."""
    return ("LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ) or slurm_tasks() > 1


def slurm_tasks() -> int:
    """Tasks in the SLURM job step running this process (0 outside a step).

    Only inside an `srun` step (SLURM_STEP_ID is set): the batch script itself also sees
    SLURM_NTASKS, but it is one process, and must not wait for others.
    """
    if "SLURM_STEP_ID" not in os.environ or "SLURM_PROCID" not in os.environ:
        return 0
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")))


def adopt_slurm_env() -> None:
    """Set torch's rendezvous variables from SLURM's in an `srun` step of several tasks.

    Nothing to do under torchrun (its variables are already there) or in one task.
    """
    if "WORLD_SIZE" in os.environ or slurm_tasks() <= 1:
        return
    env = os.environ
    env["RANK"] = env["SLURM_PROCID"]
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env["WORLD_SIZE"] = str(slurm_tasks())
    env.setdefault("MASTER_ADDR", first_host(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")))
    env.setdefault("MASTER_PORT", str(slurm_port(env.get("SLURM_JOB_ID", "0"))))


def slurm_port(job_id: str) -> int:
    """A rendezvous port per job, so two jobs sharing a node never share a store."""
    return 20000 + int(job_id or 0) % 20000


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: "gpu[07-09,12],cpu1" -> "gpu07"."""
    hosts = expand_nodelist(nodelist)
    return hosts[0] if hosts else "127.0.0.1"


def expand_nodelist(nodelist: str) -> list[str]:
    """A SLURM node list as host names, in SLURM's order (what `scontrol show hostnames` prints).

    "rack[1-2]-node[01-02],login" -> rack1-node01, rack1-node02, rack2-node01, rack2-node02, login:
    several bracketed ranges in one name, zero-padded numbers kept at their width.
    """
    import re

    hosts: list[str] = []
    for name in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", nodelist):
        expanded = [""]
        for literal, ranges in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", name):
            choices = [literal]
            if ranges:
                choices = []
                for part in ranges.split(","):
                    lo, _, hi = part.partition("-")
                    if hi:
                        choices += [literal + str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)]
                    else:
                        choices.append(literal + lo)
            expanded = [head + choice for head in expanded for choice in choices]
        hosts += [h for h in expanded if h]
    return hosts


def seed_rank(env: DistEnv, seed: int) -> None:
    """Give each rank > 0 its own random streams (dropout, noise), derived from `seed`.

    The research code seeds every rank alike before it builds the model, so initial weights
    match (DDP also broadcasts rank 0's). After that, identical streams would draw the same
    dropout masks on every rank, which is not what one big batch would see; so ranks > 0
    switch to ``seed + 1_000_003 * rank``. Rank 0 keeps its stream, so a 1-process run is
    unchanged, and every run with the same seed and world size is reproducible. A resumed
    run restores each rank's own saved streams instead.
    """
    if env.rank == 0:
        return
    rank_seed = (seed + 1_000_003 * env.rank) % 2**32
    random.seed(rank_seed)
    try:
        import numpy as np

        np.random.seed(rank_seed)
    except ImportError:
        pass
    torch.manual_seed(rank_seed)  # also seeds every CUDA device


def record_exception(exc: BaseException) -> None:
    """Hand a failing rank's traceback to torchrun, which reports it as the job's root cause.

    Call inside the ``except`` block. A communication error is usually the echo of another
    rank's crash (its peer vanished), so it is left out to keep the real cause first; its
    traceback still goes to stderr.
    """
    if "TORCHELASTIC_ERROR_FILE" not in os.environ or not isinstance(exc, Exception):
        return
    if isinstance(exc, getattr(dist, "DistError", ())) or "closed by peer" in str(exc) or "reset by peer" in str(exc):
        return
    from torch.distributed.elastic.multiprocessing.errors import get_error_handler

    get_error_handler().record_exception(exc)


def launch(devices: int, module: str, argv: list[str]) -> int:
    """Start `devices` processes of ``python -m module argv`` through torch's elastic launcher.

    The same as ``torchrun --standalone --nproc_per_node=devices -m module argv``. Returns 0
    when every process finished, 75 when the run was preempted (SIGTERM or SIGUSR1 reached this
    launcher, which passes it to the workers, or every worker exited with 75), else 1 after
    printing which rank failed first and its traceback.
    """
    # Lazy: only multi-process runs need the launcher.
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from .stopping import PREEMPTED_EXIT_CODE

    os.environ[SELF_LAUNCHED] = "1"
    if "OMP_NUM_THREADS" not in os.environ:
        # torch's launcher would set 1 and print a 4-line banner saying so; a share of the cores
        # is a better default for CPU work, and saying it explicitly keeps the console quiet.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // devices))
    # The launcher's own notes on a Ctrl-C or SIGTERM ("Received SIGINT death signal, shutting
    # down workers", "Closing process ... via signal") repeat what the workers print.
    for name in ("torch.distributed.elastic.agent.server.api", "torch.distributed.elastic.multiprocessing.api"):
        logging.getLogger(name).setLevel(logging.ERROR)
    parser = get_args_parser()
    options = ["--nproc_per_node", str(devices), "--standalone"]
    # Forward SIGUSR1 too (torch >= 2.7 knows the option); SIGTERM is forwarded by every version.
    extra = ["--signals-to-handle", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"]
    args, unknown = parser.parse_known_args([*options, *extra, "-m", module, *argv])
    if unknown:
        args = parser.parse_args([*options, "-m", module, *argv])
    try:
        run(args)
    except SignalException as exc:  # the workers got the signal too and saved a checkpoint
        if exc.sigval in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
            return PREEMPTED_EXIT_CODE
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        codes = {failure.exitcode for failure in exc.failures.values()}
        # The first worker to exit with 75 makes the launcher SIGTERM the others, which may still be
        # shutting down after the same agreed stop: they show as -15, not as failures of their own.
        if PREEMPTED_EXIT_CODE in codes and codes <= {PREEMPTED_EXIT_CODE, -signal.SIGTERM}:
            return PREEMPTED_EXIT_CODE
        print(exc, file=sys.stderr)  # names the first failing rank, with its traceback
        return 1
    return 0


class ResumableSampler(Sampler[int]):
    """Seeded shuffle per epoch, sharded over processes, able to start mid-epoch.

    Order depends only on (seed, epoch), so a resumed run replays exactly the batches an
    uninterrupted run would see. `start` is a global position in the epoch's order: the
    samples every process together consumed before a mid-epoch checkpoint. Rank r takes
    ``order[start:][r::world_size]``, so with batch size B the ranks' i-th batches together
    are the i-th batch of size ``B * world_size`` of a 1-process run, and a run resumed on
    another number of processes (with the same global batch) trains exactly the samples the
    epoch has left.
    Shards are padded with the first samples to equal length, as DistributedSampler does:
    every rank takes the same number of steps. (Evaluation uses `EvalBatchSampler`.)
    """

    def __init__(self, length: int, shuffle: bool, seed: int, rank: int, world_size: int) -> None:
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        order = _epoch_order(self.length, self.shuffle, self.seed, self.epoch)
        if self.world_size > 1:  # equal shards: every process takes as many steps
            total = -(-self.length // self.world_size) * self.world_size
            order += order[: total - len(order)]
        if self.start:
            order = order[self.start :]
        if self.world_size > 1:
            order = order[self.rank :: self.world_size]
        return order

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


class SeededBatch(list):
    """One batch of sample indices that seeds the data-loading worker which fetches it."""

    seed = 0

    def __iter__(self):
        if get_worker_info() is not None:  # in a worker: its random streams, for this batch alone
            _seed_streams(self.seed)
        return super().__iter__()


class SeededBatches(BatchSampler):
    """Training batches for a loader with workers: each batch carries a seed of its own.

    A worker seeds torch, random and numpy from it just before it reads the batch's samples,
    so the random augmentations drawn in ``Dataset.__getitem__`` depend only on (seed, rank,
    epoch, batch): not on how many workers there are, which worker reads the batch, or what
    the worker read before. A run resumed mid-epoch (or with persistent workers) draws the
    same augmentations, bit for bit, as an uninterrupted one.
    """

    def __init__(self, sampler: ResumableSampler, batch_size: int, drop_last: bool, seed: int) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.seed = seed

    def __iter__(self):
        s = self.sampler
        first = s.start // (self.batch_size * s.world_size)  # the batches a resumed epoch skipped
        base = _mix(self.seed, s.rank, s.epoch)
        for i, indices in enumerate(super().__iter__(), first):
            batch = SeededBatch(indices)
            batch.seed = _mix(base, i)
            yield batch


def _mix(*values: int) -> int:
    """A 64-bit seed from several integers (splitmix64 steps): nearby inputs give unrelated seeds."""
    state = 0
    for v in values:
        state = (state + (v & (2**64 - 1)) + 0x9E3779B97F4A7C15) & (2**64 - 1)
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
        state = z ^ (z >> 31)
    return state


def _seed_streams(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed & 0xFFFFFFFF)
    except ImportError:
        pass


class EvalBatchSampler(Sampler[list[int]]):
    """Evaluation batches sharded over processes: each sample counted once, and the same number
    of batches on every process.

    A step may run collectives (``self.log(..., on_step=True, sync_dist=True)``, a torchmetrics
    metric with ``dist_sync_on_step``, ``all_gather``), so a process that ran out of batches
    would leave the others waiting forever; and the epoch's reductions need every process.
    Batches are cut as for training: the ranks' i-th batches together are the i-th batch of
    ``batch_size * world_size`` samples, strided over the ranks, no padding. Where the last such
    batch has fewer samples than processes, it borrows from the one before so every rank gets
    one. Where even that cannot work (batch size 1, or fewer samples than processes), a rank
    without a sample runs a copy of the batch's first sample; the loop knows it from
    `real_batches` and leaves it out of the epoch's `self.log` values, the module's
    torchmetrics states and predict's outputs.
    """

    def __init__(
        self, length: int, batch_size: int, shuffle: bool, seed: int, rank: int, world_size: int, drop_last: bool
    ) -> None:
        self.length, self.batch_size, self.shuffle, self.seed = length, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self._cache: tuple[int, list[list[int]], int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> tuple[list[list[int]], int]:
        """This rank's batches, and how many of them (from the start) hold samples of its own."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1], self._cache[2]
        order = _epoch_order(self.length, self.shuffle, self.seed, self.epoch)
        world, full = self.world_size, self.batch_size * self.world_size
        sizes = [full] * (self.length // full)
        rest = self.length % full
        if rest and not self.drop_last:
            sizes.append(rest)
        if len(sizes) > 1 and sizes[-1] < world and sizes[-2] - (world - sizes[-1]) >= world:
            sizes[-2] -= world - sizes[-1]
            sizes[-1] = world
        batches, real, start = [], 0, 0
        for size in sizes:
            chunk = order[start : start + size]
            start += size
            mine = chunk[self.rank :: world]
            real += bool(mine)
            batches.append(mine or chunk[:1])  # only ever the last batch: a copy to run the step's collectives
        self._cache = (self.epoch, batches, real)
        return batches, real

    @property
    def real_batches(self) -> int:
        return self._batches()[1]

    def __iter__(self):
        return iter(self._batches()[0])

    def __len__(self) -> int:
        return len(self._batches()[0])


def epoch_iterator(
    loader: Any, epoch: int, done: int, world_size: int, start_rng: dict[str, Any] | None
) -> tuple[Iterator[Any], dict[str, Any] | None]:
    """The training loader's iterator for `epoch`, past the `done` batches a mid-epoch checkpoint trained.

    The engine's sampler starts at the global position, reading nothing twice. Any other loader
    (``use_distributed_sampler=False``, a custom sampler in one process, an IterableDataset) is
    read from the epoch's start and its first `done` batches are dropped, with the random
    streams put back as they were when the epoch began (`start_rng`, saved in the checkpoint):
    a sampler shuffling from torch's global RNG or the loader's generator, and the workers'
    seeds, draw what they drew then. Returns the iterator and the epoch's starting random
    state (None for the engine's sampler, which needs none).
    """
    sampler = getattr(loader, "sampler", None)
    for s in {id(x): x for x in (sampler, getattr(loader, "batch_sampler", None)) if x is not None}.values():
        if callable(getattr(s, "set_epoch", None)):
            s.set_epoch(epoch)  # a fresh shuffle each epoch (Lightning sets both)
    if isinstance(sampler, ResumableSampler):
        sampler.start = done * loader.batch_size * world_size
        return iter(loader), None
    if not done or start_rng is None:
        start_rng = _snapshot(loader) if not done else None
        return _skip(iter(loader), done), start_rng  # (done without start_rng: an older checkpoint)
    now = _snapshot(loader)
    _restore(loader, start_rng)
    try:
        data = _skip(iter(loader), done)
    finally:
        _restore(loader, now)
    return data, start_rng


def _skip(data: Iterator[Any], batches: int) -> Iterator[Any]:
    """`data` past its first `batches` items; an empty iterator (the epoch ends) if it has fewer."""
    for _ in range(batches):
        try:
            next(data)
        except StopIteration:
            return iter(())
    return data


def _generators(loader: Any) -> list[torch.Generator]:
    """The loader's own generators: its own (workers' seeds) and its sampler's (the shuffle)."""
    found = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)]
    batch_sampler = getattr(loader, "batch_sampler", None)
    found.append(getattr(getattr(batch_sampler, "sampler", None), "generator", None))
    return list({id(g): g for g in found if isinstance(g, torch.Generator)}.values())


def _snapshot(loader: Any) -> dict[str, Any]:
    from .checkpoint import capture_rng_state

    return {
        "global": capture_rng_state(torch.device("cpu")),
        "generators": [g.get_state() for g in _generators(loader)],
    }


def _restore(loader: Any, state: dict[str, Any]) -> None:
    from .checkpoint import restore_rng_state

    restore_rng_state(state["global"], torch.device("cpu"))
    generators = _generators(loader)
    if len(generators) == len(state["generators"]):
        for g, s in zip(generators, state["generators"], strict=True):
            g.set_state(s)


def resume_check(loader: Any, loop: dict[str, Any], world_size: int) -> str:
    """Whether the rest of a mid-epoch checkpoint's epoch can be known from `loader`: raises
    ValueError where it cannot, returns a line to print where it can only be assumed, else ""."""
    if isinstance(getattr(loader, "sampler", None), ResumableSampler):
        return ""
    saved_world, saved_batch = loop.get("world_size") or 1, loop.get("batch_size")
    batch_size = getattr(loader, "batch_size", None)
    if saved_world != world_size or saved_batch != batch_size:
        raise ValueError(
            f"the checkpoint was saved mid-epoch on {saved_world} process(es) with batch_size={saved_batch}, "
            f"reading the training data through your own sampler or an iterable data set; this run has "
            f"{world_size} with batch_size={batch_size}, so which samples the epoch has left cannot be known. "
            "Resume with the same processes and batch size, or from a checkpoint saved at an epoch end"
        )
    if isinstance(getattr(loader, "dataset", None), IterableDataset):
        return (
            f"resuming mid-epoch from an IterableDataset: its first {loop['batches_done']} batches this epoch "
            "are read again and dropped; exact only if it yields the same batches in the same order "
            "(seeded by the epoch, or by the random state, which is restored for it)"
        )
    return ""


def real_batches(loader: Any) -> int:
    """How many of an evaluation loader's batches hold this rank's own samples (the rest are copies)."""
    sampler = getattr(loader, "batch_sampler", None)
    return sampler.real_batches if isinstance(sampler, EvalBatchSampler) else sys.maxsize


def _epoch_order(length: int, shuffle: bool, seed: int, epoch: int) -> list[int]:
    """The epoch's order of sample indices: a permutation seeded by (seed, epoch), or 0..length-1."""
    if not shuffle:
        return list(range(length))
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


class WorkerInit:
    """Runs first in each data-loading worker: batches travel by file name, then the user's init.

    torch's default `file_descriptor` sharing sends every tensor's descriptor over a socket,
    about 1 ms of the training process's time per batch; by shared-memory file name it is a
    third of that. The sender picks the way, so this changes only how the workers' batches
    travel; torch's shm manager removes the files if a process dies.
    """

    def __init__(self, user_fn: Callable[[int], None] | None, rank: int = 0, seed_workers: bool = False) -> None:
        self.user_fn = user_fn
        self.rank, self.seed_workers = rank, seed_workers

    def __call__(self, worker_id: int) -> None:
        # A Ctrl-C reaches the workers too (one process group): the training process decides
        # what happens (finish the step, save), so a worker must not die of it mid-epoch.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if "file_system" in torch.multiprocessing.get_all_sharing_strategies():
            torch.multiprocessing.set_sharing_strategy("file_system")
        if self.seed_workers:
            seed_worker(worker_id, self.rank)
        if self.user_fn is not None:
            self.user_fn(worker_id)


def seed_worker(worker_id: int, rank: int) -> None:
    """`seed_everything(workers=True)`: seed torch, random and numpy in a loader worker.

    The seeds derive from the loader's base seed (torch gives each worker ``base + worker_id``),
    the worker id and the global rank, through a 64-bit linear congruential generator (Knuth's
    multiplier), the same derivation as Lightning's ``pl_worker_init_function``: no two
    workers of a job share a stream, and a rerun with the same seed draws the same ones.
    """
    base_seed = torch.initial_seed() - worker_id
    state = (base_seed << 32) | (worker_id << 16) | rank
    seeds = []
    for _ in range(4):
        state = (state * 6364136223846793005 + 1) & ((1 << 64) - 1)
        seeds.append(state)
    torch.manual_seed(seeds[0])
    random.seed((seeds[1] << 32) | seeds[2])
    try:
        import numpy as np

        np.random.seed(seeds[3] & 0xFFFFFFFF)
    except ImportError:
        pass


def pin_memory_default(device: torch.device) -> bool:
    """Whether the engine's loaders pin memory: on CUDA, so each batch's copy to the GPU is
    asynchronous (an unpinned tensor's copy blocks the CPU until it is done)."""
    return device.type == "cuda"


def prepare_loader(loader: Any, env: DistEnv, seed: int, train: bool, sequential: bool = False) -> Any:
    """Rebuild a DataLoader around a ResumableSampler (training) or an EvalBatchSampler
    (evaluation and predict); other iterables pass through.

    The rebuilt loader has its own generator, so creating its iterator never consumes the
    global RNG (which would make a resumed run draw different dropout masks). It is seeded
    per rank, so data-loading workers on different ranks draw different augmentations.
    Under DDP an IterableDataset passes through with a warning (it must shard itself), and a
    custom sampler or batch_sampler is an error (the engine cannot shard it). On CUDA the
    rebuilt loader pins memory (`pin_memory_default`; DataLoader's ``pin_memory=False`` is its
    default, not told apart from a choice: ``use_distributed_sampler=False`` keeps a loader as it is).
    ``sequential`` (``overfit_batches``) turns a shuffling loader's shuffle off, with a warning.
    """
    if not isinstance(loader, DataLoader):
        return loader
    which = "train" if train else "validation"
    if isinstance(loader.dataset, IterableDataset):
        if env.active:
            warnings.warn(
                f"the {which} DataLoader reads an IterableDataset: every process reads all of it unless the "
                "dataset shards itself by torch.distributed.get_rank(), and every process must yield the same "
                "number of batches",
                stacklevel=3,
            )
        return loader
    sampler = loader.sampler
    if loader.batch_size is not None and isinstance(sampler, (RandomSampler, DistributedSampler)):
        shuffle = getattr(sampler, "shuffle", True)
    elif loader.batch_size is not None and isinstance(sampler, SequentialSampler):
        shuffle = False
    else:
        if env.active:
            custom = type(sampler if loader.batch_size is not None else loader.batch_sampler).__name__
            raise ValueError(
                f"the {which} DataLoader uses a custom sampler ({custom}); under DDP pass batch_size and "
                "shuffle=True/False and let the engine shard it, or shard the data yourself in an IterableDataset"
            )
        return loader
    if shuffle and sequential:
        warnings.warn(f"overfit_batches: the {which} DataLoader shuffles; the engine turns shuffling off", stacklevel=3)
        shuffle = False
    length = len(loader.dataset)
    if train:
        batching = dict(
            batch_size=loader.batch_size,
            sampler=ResumableSampler(length, shuffle, seed, env.rank, env.world_size),
            drop_last=loader.drop_last,
        )
    else:
        sampler = EvalBatchSampler(length, loader.batch_size, shuffle, seed, env.rank, env.world_size, loader.drop_last)
        batching = dict(batch_sampler=sampler)
    kwargs = dict(
        **batching,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory or pin_memory_default(env.device),
        timeout=loader.timeout,
        worker_init_fn=(
            WorkerInit(loader.worker_init_fn, env.rank, os.environ.get("PL_SEED_WORKERS") == "1")
            if loader.num_workers > 0
            else loader.worker_init_fn
        ),
        multiprocessing_context=loader.multiprocessing_context,
        generator=torch.Generator().manual_seed(seed + 1_000_003 * env.rank),
        persistent_workers=loader.persistent_workers,
    )
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    prepared = DataLoader(loader.dataset, **kwargs)
    if train and loader.num_workers > 0 and loader.worker_init_fn is None:  # (your own init keeps its seeds)
        # Set past DataLoader's guard, so batch_size, sampler and drop_last keep their usual values.
        seeded = SeededBatches(prepared.sampler, loader.batch_size, loader.drop_last, seed)
        object.__setattr__(prepared, "batch_sampler", seeded)
    return prepared


def shutdown_workers(loader: Any) -> None:
    """Stop a DataLoader's persistent workers now (else a later garbage collection waits on them)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None
