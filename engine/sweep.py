"""Run a W&B sweep spec without a server: ``python -m <package>.sweep [SPEC] --count N [KEY=VALUE]...``.

The sweep lives in ``sweeps/<name>/`` at the project root: ``state.json`` (every trial: its values,
state, metric history and result), ``results.csv`` and ``plot.png``. A worker takes the sweep's
file lock only to claim a trial or record a result, so any number of workers (processes on one
machine, SLURM array tasks on nodes sharing the filesystem) run distinct trials.

Each trial is an ordinary training run in a subprocess, ``python -m <package>.train`` with the
proposed values as overrides: a trial that crashes costs that trial, not the worker, and the run
is exactly what a researcher would have started by hand (its ``runs/<name>/``, checkpoints,
``summary.json`` and W&B run, grouped under the sweep's name). While a trial runs, its worker
holds ``trials/<id>.lock`` and the trial inherits it: the lock is free only when both are gone
(killed, preempted, node lost), and then the next worker resumes that trial (``resume=auto``:
its last checkpoint) before it proposes a new one.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .callbacks import Callback
from .config import ConfigError, project_root
from .states import TrainerFn
from .stopping import INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE
from .sweep_spec import Spec, load_spec

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the engine trains there, sweeps need POSIX file locks
    fcntl = None  # type: ignore[assignment]

DIR_ENV = "SCAFFOLD_SWEEP_DIR"  # set for a trial: its sweep folder ...
TRIAL_ENV = "SCAFFOLD_SWEEP_TRIAL"  # ... and its trial id
WORKER_ENV = "SCAFFOLD_SWEEP_WORKER"  # scripts/sweep.sbatch: <array job>_<task>, stable across requeues
EARLY_TERMINATED = "sweep_early_terminate"  # the trial's stop_reason in summary.json
RESUMABLE = ("preempted", "killed")
MAX_ATTEMPTS = 3  # a trial killed this often (out of memory?) is marked failed
USAGE = "usage: python -m <package>.sweep [SPEC] [--count N] [KEY=VALUE]...  (SPEC: configs/sweep.yaml)"


# -- shared state ---------------------------------------------------------------------------------
class SweepState:
    """``state.json`` under an exclusive ``flock``; written whole (tmp + replace), so reads never see half."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "state.json"

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
            except OSError as exc:  # e.g. Lustre mounted without -o flock
                raise ConfigError(
                    f"{self.folder}: this filesystem refuses file locks ({exc.strerror}); workers could not share "
                    "the sweep: put the project on a filesystem with locks (ask your admins which)"
                ) from None
            data = self.read()
            yield data
            tmp = self.path.with_name(f".state.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)

    def read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def trial_lock(self, trial_id: int) -> int | None:
        """Hold ``trials/<id>.lock`` (an fd), or None when a live worker or trial holds it."""
        path = self.folder / "trials" / f"{trial_id}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd


# -- proposals --------------------------------------------------------------------------------------
def exhausted(spec: Spec, data: dict[str, Any]) -> str | None:
    """Why no new trial may start, else None."""
    trials = data["trials"]
    if spec.method == "grid" and len(trials) >= len(spec.grid()):
        return f"the grid's {len(spec.grid())} points have all been tried"
    if spec.run_cap is not None and len(trials) >= spec.run_cap:
        return f"run_cap={spec.run_cap} trials reached"
    if spec.target is not None:
        done = [t["metric"] for t in trials if t.get("metric") is not None]
        if any(m == spec.target or spec.better(m, spec.target) for m in done):
            return f"metric.target {spec.metric}={spec.target} reached"
    return None


def propose(spec: Spec, data: dict[str, Any], trial_id: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The values of the next trial (every parameter, constants included) and Optuna's raw draw."""
    if spec.method == "grid":
        return spec.grid()[trial_id], None
    if spec.method == "random":
        rng = random.Random(f"{data['id']}:{trial_id}")  # reproducible per sweep and trial
        return {p.key: p.sample(rng) for p in spec.params}, None
    return _bayes(spec, data, trial_id)


def _bayes(spec: Spec, data: dict[str, Any], trial_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optuna's TPE sampler over every trial so far, rebuilt from state.json (no database)."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("method bayes needs Optuna: pip install optuna (or use method random or grid)") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {p.key: p.optuna_distribution(spec.source) for p in spec.swept}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant_liar is "experimental"
        # constant_liar: trials still running count as bad, so concurrent workers spread out.
        sampler = optuna.samplers.TPESampler(
            seed=(int(data["id"], 16) * 100_003 + trial_id) % 2**32, constant_liar=True
        )
        study = optuna.create_study(direction=spec.goal, sampler=sampler)
        for t in data["trials"]:
            raw = t.get("raw")
            if not raw or set(raw) != set(dists):
                continue
            metric, S = t.get("metric"), optuna.trial.TrialState
            steps = {i: v for i, (_, v) in enumerate(t.get("history", []))}
            if t["state"] == "finished" and metric is not None and math.isfinite(metric):
                state, value = S.COMPLETE, metric
            elif t["state"] == "pruned":
                state, value = S.PRUNED, None
            elif t["state"] in ("running", *RESUMABLE):
                state, value = S.RUNNING, None
            else:
                state, value = S.FAIL, None
            study.add_trial(
                optuna.trial.create_trial(
                    params=raw, distributions=dists, value=value, state=state, intermediate_values=steps
                )
            )
        trial = study.ask(dists)
    raw = dict(trial.params)
    values = {p.key: p.from_optuna(raw[p.key]) if p.swept else p.get("value") for p in spec.params}
    return values, raw


# -- early termination, inside a trial ------------------------------------------------------------
def hyperband_verdict(data: dict[str, Any], trial_id: int) -> str | None:
    """W&B's hyperband rule (its ``hyperband_stopping.py``), checked after each validation: take
    the highest band (a count of validations) the trial has reached; the threshold is the value
    at rank ``int(len / eta)`` of every trial's metric at that band (best first); the trial stops
    when its best value so far (``strict``: its value at the band) is worse. None: carry on."""
    hb, metric = data.get("hyperband"), data.get("metric")
    sign = -1.0 if data.get("goal") == "maximize" else 1.0  # compare as "lower is better"
    mine = [sign * v for _, v in data["trials"][trial_id].get("history", [])]
    reached = [b for b in (hb or {}).get("bands", []) if b <= len(mine)]
    if not reached:
        return None
    band = reached[-1]
    at_band = sorted(sign * t["history"][band - 1][1] for t in data["trials"] if len(t.get("history", [])) >= band)
    threshold = at_band[int(len(at_band) / hb["eta"])]
    value = mine[band - 1] if hb.get("strict") else min(mine)
    if value <= threshold:
        return None
    what = f"at validation {band}" if hb.get("strict") else f"best so far after {len(mine)} validations"
    return (
        f"hyperband: {metric}={sign * value:.4g} ({what}) is not in the top 1/{hb['eta']:g} "
        f"of the {len(at_band)} trials at validation {band} (threshold {sign * threshold:.4g})"
    )


class SweepTrial(Callback):
    """Added to a trial's Trainer: records the run folder and each validation's metric in the
    sweep, and stops the run when the spec's early termination says so."""

    def __init__(self, folder: Path, trial_id: int) -> None:
        self.state = SweepState(folder)
        self.trial_id = trial_id

    def on_fit_start(self, trainer: Any, module: Any) -> None:
        if trainer.is_global_zero:
            with self.state.locked() as data:
                trial = data["trials"][self.trial_id]
                trial["run_dir"] = str(trainer.default_root_dir)
                trial["pid"], trial["host"] = os.getpid(), socket.gethostname()

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or not trainer.is_global_zero:
            return
        with self.state.locked() as data:
            value = trainer.callback_metrics.get(data.get("metric") or "")
            if value is None:
                return
            trial = data["trials"][self.trial_id]
            step = trainer.global_step  # validations replayed after a resume replace the old ones
            trial["history"] = [h for h in trial.get("history", []) if h[0] < step] + [[step, float(value)]]
            verdict = hyperband_verdict(data, self.trial_id)
        if verdict:
            trainer.request_stop(EARLY_TERMINATED, verdict)


def trial_callbacks() -> list[Callback]:
    """The sweep's callback when this process is a trial, else none."""
    folder, trial = os.environ.get(DIR_ENV), os.environ.get(TRIAL_ENV)
    return [SweepTrial(Path(folder), int(trial))] if folder and trial else []


# -- the worker -----------------------------------------------------------------------------------
def _yaml_value(value: Any) -> str:
    """A value as the engine's KEY=VALUE parser (YAML) reads it back unchanged."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text  # YAML 1.1: 1e-05 is a string
    if isinstance(value, str):
        import yaml

        try:
            same = yaml.safe_load(value) == value
        except yaml.YAMLError:
            same = False
        return value if same else json.dumps(value)
    return json.dumps(value)


def worker_id() -> str:
    if os.environ.get(WORKER_ENV):
        return os.environ[WORKER_ENV]
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    return f"{socket.gethostname()}-{os.getpid()}"


def parse_args(argv: list[str], prog: str = "<package>.sweep") -> tuple[str | None, int | None, list[str]]:
    spec: str | None = None
    count: int | None = None
    overrides: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(USAGE.replace("<package>.sweep", prog))
            print(__doc__.split("\n", 2)[2].replace("<package>", prog.rpartition(".")[0]))
            raise SystemExit(0)
        if arg == "--count" or arg.startswith("--count="):
            text = arg.partition("=")[2] if "=" in arg else (args.pop(0) if args else "")
            if not text.isdigit() or int(text) < 1:
                raise ConfigError(f"--count needs a number of trials >= 1, got {text!r}")
            count = int(text)
        elif "=" in arg:
            overrides.append(arg.lstrip("-"))
        elif spec is None and not arg.startswith("-"):
            spec = arg
        else:
            raise ConfigError(f"{arg!r}: not a spec, --count N or KEY=VALUE ({USAGE})")
    return spec, count, overrides


def _pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    """A trial whose worker dies gets SIGTERM: it saves its checkpoint and exits (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Worker:
    def __init__(self, spec: Spec, root: Path, train_module: str, overrides: list[str], shown: str) -> None:
        self.spec, self.root, self.train_module, self.overrides = spec, root, train_module, overrides
        self.folder = root / "sweeps" / spec.name
        self.state = SweepState(self.folder)
        self.id = worker_id()
        self.signal: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.shown = shown

    def say(self, message: str) -> None:
        print(f"sweep {self.spec.name}: {message}", flush=True)

    def start(self) -> None:
        """Create the sweep, or join it; a changed spec under the same name is refused."""
        identity = json.loads(json.dumps(self.spec.identity))
        with self.state.locked() as data:
            if not data:
                data.update(
                    name=self.spec.name,
                    id=secrets.token_hex(2),
                    spec=identity,
                    metric=self.spec.metric,
                    goal=self.spec.goal,
                    hyperband=vars(self.spec.hyperband) if self.spec.hyperband else None,
                    created=time.time(),
                    trials=[],
                    workers={},
                )
            elif data["spec"] != identity:
                changed = next(k for k in identity if identity[k] != data["spec"].get(k))
                raise ConfigError(
                    f"{self.shown}: its {changed} differ from those sweeps/{self.spec.name}/ was started with; "
                    f"give the changed sweep a new name (name: in the spec) or delete sweeps/{self.spec.name}/"
                )

    def claim(self) -> tuple[dict[str, Any], int, bool] | None:
        """The next trial for this worker: an abandoned one first (resumed), else a new proposal."""
        with self.state.locked() as data:
            for trial in data["trials"]:
                if trial["state"] in ("running", *RESUMABLE):
                    fd = self.state.trial_lock(trial["id"])
                    if fd is None:
                        continue  # a live worker has it
                    trial.update(state="running", worker=self.id, attempts=trial.get("attempts", 1) + 1)
                    return dict(trial), fd, True
            why = exhausted(self.spec, data)
            if why:
                self.done_reason = why
                return None
            trial_id = len(data["trials"])
            values, raw = propose(self.spec, data, trial_id)
            trial = {
                "id": trial_id,
                "run_name": f"{self.spec.name}-{data['id']}-{trial_id:03d}",
                "state": "running",
                "params": values,
                "raw": raw,
                "overrides": self.overrides,
                "worker": self.id,
                "attempts": 1,
                "started": time.time(),
                "history": [],
                "metric": None,
            }
            fd = self.state.trial_lock(trial_id)
            assert fd is not None  # a new id: nobody else has its lock
            data["trials"].append(trial)
            return dict(trial), fd, False

    def command(self, trial: dict[str, Any], resume: bool) -> list[str]:
        given = {o.partition("=")[0] for o in trial["overrides"]}
        args = [*trial["overrides"], *(f"{k}={_yaml_value(v)}" for k, v in trial["params"].items())]
        args += [f"run_name={trial['run_name']}", f"wandb.group={self.spec.name}"]
        for key, value in (("wandb.project", self.spec.project), ("wandb.entity", self.spec.entity)):
            if value and key not in given:
                args.append(f"{key}={_yaml_value(value)}")
        if resume:
            args.append("resume=auto")  # its last checkpoint; from the start if it died before one
        return [sys.executable, "-m", self.train_module, *args]

    def run_trial(self, trial: dict[str, Any], fd: int, resume: bool) -> int:
        swept = " ".join(f"{k}={_yaml_value(trial['params'][k])}" for k in (p.key for p in self.spec.swept))
        verb = f"resumes (attempt {trial['attempts']})" if resume else "starts"
        self.say(f"trial {trial['id']} {verb}: run {trial['run_name']}: {swept} [worker {self.id}]")
        env = {k: v for k, v in os.environ.items() if k != "SCAFFOLD_EXIT_FILE"}
        env.update({DIR_ENV: str(self.folder), TRIAL_ENV: str(trial["id"])})
        cmd = self.command(trial, resume)
        started = time.time()
        try:
            # Its own session: a terminal's Ctrl-C reaches the worker, which passes it on once.
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                pass_fds=(fd,),
                start_new_session=True,
                preexec_fn=_pdeathsig if sys.platform == "linux" else None,
            )
            while True:
                try:
                    code = self.proc.wait()
                    break
                except KeyboardInterrupt:  # pragma: no cover - handled by on_signal
                    continue
        finally:
            self.proc = None
        self.finish(trial, code, started)
        os.close(fd)
        return code

    def finish(self, trial: dict[str, Any], code: int, started: float) -> None:
        with self.state.locked() as data:
            record = data["trials"][trial["id"]]
            run_dir = record.get("run_dir")
            summary: dict[str, Any] = {}
            path = Path(run_dir) / "summary.json" if run_dir else None
            if path is not None and path.exists() and path.stat().st_mtime >= started - 1:
                summary = json.loads(path.read_text())
            if code == 0:
                state = "pruned" if summary.get("stop_reason") == EARLY_TERMINATED else "finished"
            elif code in (PREEMPTED_EXIT_CODE, INTERRUPTED_EXIT_CODE):
                state = "preempted"
            elif code < 0 and record.get("attempts", 1) < MAX_ATTEMPTS:
                state = "killed"
            else:
                state = "failed"
            metric = summary.get("metrics", {}).get(self.spec.metric) if self.spec.metric else None
            record.update(
                state=state,
                exit_code=code,
                metric=metric,
                stop_reason=summary.get("stop_reason"),
                epoch=summary.get("epoch"),
                global_step=summary.get("global_step"),
                best_model_path=summary.get("best_model_path"),
                wandb_run_id=summary.get("wandb_run_id") or record.get("wandb_run_id"),
                ended=time.time(),
            )
            if state in ("finished", "pruned", "failed"):
                data["workers"][self.id] = data["workers"].get(self.id, 0) + 1
            write_results(self.spec, data, self.folder)
        shown = f"{self.spec.metric}={metric:.4g}" if metric is not None else f"no {self.spec.metric or 'metric'}"
        self.say(f"trial {trial['id']} {state} (exit code {code}, {shown})")
        if state == "finished" and self.spec.metric and metric is None:
            self.say(f"warning: trial {trial['id']} never logged {self.spec.metric} (metric.name in the spec)")

    def on_signal(self, signum: int, frame: Any) -> None:
        """Pass it on once per signal: the trial saves its checkpoint and exits with code 75 / 130
        (a second Ctrl-C makes it exit at once, as in a plain run); no new trial starts."""
        self.signal = signum
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)

    def loop(self, count: int | None) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)):
            if sig is not None:
                signal.signal(sig, self.on_signal)
        self.done_reason = ""
        done = self.state.read().get("workers", {}).get(self.id, 0)  # a requeued array task keeps its count
        while count is None or done < count:
            if self.signal is not None:
                return PREEMPTED_EXIT_CODE if self.signal != signal.SIGINT else INTERRUPTED_EXIT_CODE
            claimed = self.claim()
            if claimed is None:
                self.say(f"nothing left to run: {self.done_reason}")
                break
            trial, fd, resume = claimed
            code = self.run_trial(trial, fd, resume)
            if code in (PREEMPTED_EXIT_CODE, INTERRUPTED_EXIT_CODE) or self.signal is not None:
                self.say(f"stopping: trial {trial['id']} saved; the next worker resumes it")
                return code if code in (PREEMPTED_EXIT_CODE, INTERRUPTED_EXIT_CODE) else PREEMPTED_EXIT_CODE
            if code == 2:
                self.say(f"stopping: trial {trial['id']} had a config error (above); every trial would")
                return 2
            done = self.state.read()["workers"].get(self.id, 0)
        return 0


# -- results ----------------------------------------------------------------------------------------
def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def ranked(spec: Spec, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Trials with a metric, best first."""
    scored = [t for t in data["trials"] if t.get("metric") is not None and math.isfinite(t["metric"])]
    return sorted(scored, key=lambda t: -t["metric"] if spec.goal == "maximize" else t["metric"])


def write_results(spec: Spec, data: dict[str, Any], folder: Path) -> Path:
    keys = [p.key for p in spec.swept]
    path = folder / "results.csv"
    tmp = path.with_name(f".results.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["trial", "run_name", "state", *keys, spec.metric or "metric", "epoch", "stop_reason", "worker"])
        for t in data["trials"]:
            row = [t["id"], t["run_name"], t["state"], *(_cell(t["params"].get(k)) for k in keys), t.get("metric")]
            out.writerow([*row, t.get("epoch"), t.get("stop_reason"), t.get("worker")])
    os.replace(tmp, path)
    return path


def _rel(path: str | Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def report(spec: Spec, data: dict[str, Any], folder: Path, root: Path) -> list[str]:
    """The end-of-worker block: counts, the leaderboard, the best trial, results, plot, W&B."""
    trials = data["trials"]
    states: dict[str, int] = {}
    for t in trials:
        states[t["state"]] = states.get(t["state"], 0) + 1
    lines = [f"sweep {spec.name}: {len(trials)} trial(s): " + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))]
    board = ranked(spec, data)
    if board:
        keys = [p.key for p in spec.swept]
        lines.append(f"leaderboard ({spec.metric}, {spec.goal}, best first):")
        header = ["#", "trial", "state", spec.metric or "metric", *keys]
        rows = [
            [str(i + 1), str(t["id"]), t["state"], f"{t['metric']:.4g}", *(str(t["params"].get(k)) for k in keys)]
            for i, t in enumerate(board[:10])
        ]
        widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
        for r in [header, *rows]:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        best = board[0]
        lines.append(f"best: trial {best['id']}, run {best['run_name']}, {spec.metric}={best['metric']:.4g}")
        if best.get("run_dir"):
            lines.append(f"  config: {_rel(Path(best['run_dir']) / 'config.yaml', root)}")
        if best.get("best_model_path"):
            lines.append(f"  checkpoint: {_rel(best['best_model_path'], root)}")
    elif spec.metric:
        lines.append(f"no trial has logged {spec.metric} yet")
    lines.append(f"results: {_rel(folder / 'results.csv', root)}")
    lines.append(plot(spec, data, folder, root))
    offline = []
    for t in trials:
        if t.get("wandb_run_id"):
            offline += sorted((root / "wandb").glob(f"offline-run-*-{t['wandb_run_id']}"))
    if offline:
        lines.append("W&B: the trials were saved offline (group " + spec.name + "); upload them with:")
        lines.append("  wandb sync " + " ".join(shlex.quote(_rel(p, root)) for p in offline))
    elif any(t.get("wandb_run_id") for t in trials):
        lines.append(f"W&B: the trials are in group {spec.name} of the project")
    return lines


def plot(spec: Spec, data: dict[str, Any], folder: Path, root: Path) -> str:
    """``plot.png``: the metric per trial and against each swept parameter; one line why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install -e '.[plots]')"
    scored = [t for t in data["trials"] if t.get("metric") is not None and math.isfinite(t["metric"])]
    if not scored:
        return "plot skipped: no trial has a metric yet"
    panels = [None, *spec.swept]
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    colors = {"finished": "tab:blue", "pruned": "tab:orange"}
    for ax, param in zip(axes.flat, panels, strict=False):
        c = [colors.get(t["state"], "tab:gray") for t in scored]
        y = [t["metric"] for t in scored]
        if param is None:
            ax.scatter([t["id"] for t in scored], y, c=c)
            best, line = [], None
            for t in sorted(scored, key=lambda t: t["id"]):
                line = t["metric"] if line is None or spec.better(t["metric"], line) else line
                best.append((t["id"], line))
            ax.step([b[0] for b in best], [b[1] for b in best], where="post", color="black", lw=1, label="best so far")
            ax.set_xlabel("trial")
            ax.legend(fontsize=7)
        else:
            x = [t["params"].get(param.key) for t in scored]
            if param.distribution == "categorical":  # the spec's values, in its order, evenly spaced
                labels = [json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in param.get("values")]
                shown = [json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in x]
                ax.scatter([labels.index(v) if v in labels else -1 for v in shown], y, c=c)
                ax.set_xticks(range(len(labels)), labels)
                ax.set_xlim(-0.5, len(labels) - 0.5)
            else:
                ax.scatter(x, y, c=c)
                if param.log_scale and all(isinstance(v, (int, float)) and v > 0 for v in x):
                    ax.set_xscale("log")
                    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(param.key)
        ax.set_ylabel(spec.metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"sweep {spec.name}: {spec.metric} ({spec.goal}); orange: stopped early")
    fig.tight_layout()
    path = folder / "plot.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot: {_rel(path, root)}"


def _spec_path(arg: str | None, root: Path) -> tuple[Path, str]:
    given = Path(arg or "configs/sweep.yaml").expanduser()
    path = given if given.is_absolute() or given.is_file() else root / given
    return path, str(given)


def sweep(train_module: str, argv: list[str] | None = None) -> int:
    """Run trials of a sweep spec until ``--count`` of them ended (or the sweep has no more)."""
    prog = train_module.rpartition(".")[0] + ".sweep"
    spec_arg, count, overrides = parse_args(sys.argv[1:] if argv is None else argv, prog)
    root = project_root()
    path, shown = _spec_path(spec_arg, root)
    spec = load_spec(path, shown)
    for override in overrides:
        key = override.partition("=")[0]
        if key in ("run_name", "resume"):
            raise ConfigError(f"{override}: the sweep names and resumes its trials itself; remove it")
        if key in {p.key for p in spec.params}:
            raise ConfigError(
                f"{override}: {key} is in the spec's parameters; change it there, not on the command line"
            )
    worker = Worker(spec, root, train_module, overrides, shown)
    worker.start()
    code = worker.loop(count)
    for line in report(spec, worker.state.read(), worker.folder, root):
        print(line, flush=True)
    return code


def sweep_main(train_module: str, argv: list[str] | None = None) -> int:
    """The command line: a bad spec is one ``error:`` line and exit code 2."""
    from .run import run_main

    return run_main(lambda: sweep(train_module, argv))
