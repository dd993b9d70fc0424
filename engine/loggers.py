"""Loggers: where metrics, hyperparameters and checkpoints go.

The trainer talks to one logger through the small `Logger` protocol below, and only on
global rank 0. Three implementations:

- `NullLogger`: does nothing (the default, and what every rank but 0 gets);
- `CSVLogger`: ``metrics.csv`` and ``hparams.yaml`` in a folder, no dependencies;
- `WandbLogger`: Weights & Biases, imported lazily so the engine runs without it.

Call order the trainer follows: ``load_state_dict`` (when resuming, before anything is
logged), ``log_hyperparams``, ``watch``, ``log_metrics`` every ``log_every_n_steps``,
``after_save_checkpoint`` after each save, ``log_summary`` and ``finalize`` at the end
(always, also after an exception). A logger never raises into the training loop.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import enum
import importlib.util
import math
import os
import re
import secrets
import string
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

STEP_KEY = "trainer/global_step"
"""The x-axis every W&B metric is plotted against (`define_metric`), so resumed runs line up."""

MODES = ("auto", "online", "offline", "disabled")
LOG_MODEL = (False, True, "best", "last", "all")
WATCH = (False, "gradients", "parameters", "all")
EXIT_CODES = {"success": 0, "failed": 1, "interrupted": 130}
FLUSH_SETTING = "x_transaction_log_flush_interval"  # wandb >= 0.2x; seconds between run-file flushes


@runtime_checkable
class Logger(Protocol):
    """What the trainer needs from a logger (called on global rank 0 only)."""

    @property
    def run_id(self) -> str | None:
        """The W&B run id (None when there is no W&B run)."""
        ...

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        """The resolved config (a nested dict) and the module's saved hyperparameters."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Scalar metrics at ``step`` (the trainer's ``global_step``)."""

    def after_save_checkpoint(
        self, checkpoint_callback: Any, *, step: int | None = None, epoch: int | None = None
    ) -> None:
        """A checkpoint was written; the callback has ``best_model_path``, ``best_k_models`` ..."""

    def watch(self, module: Any, log_freq: int | None = None) -> None:
        """Gradient/parameter histograms, where the logger supports them and they were asked for."""

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Final values: best score, stop reason, last metrics."""

    def state_dict(self) -> dict[str, Any]:
        """Plain containers to put in a checkpoint (run id, last step ...)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from a checkpoint before the first log call, so a resumed run reattaches."""

    def finalize(self, status: str) -> None:
        """End of training: ``success``, ``failed`` or ``interrupted``. Idempotent; never raises."""


class NullLogger:
    """A logger that records nothing (no-op object instead of ``if logger:`` branches)."""

    run_id: str | None = None

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        pass

    def after_save_checkpoint(
        self, checkpoint_callback: Any, *, step: int | None = None, epoch: int | None = None
    ) -> None:
        pass

    def watch(self, module: Any, log_freq: int | None = None) -> None:
        pass

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def finalize(self, status: str) -> None:
        pass


# -- helpers ---------------------------------------------------------------------------------
def _scalar(value: Any) -> Any:
    """A Python number from a tensor / numpy scalar; anything else unchanged."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def _plain(value: Any) -> Any:
    """Plain, JSON/YAML-friendly containers (dicts with str keys, lists, numbers, str, None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    value = _scalar(value)
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` into ``base`` (nested dicts merge, other values replace)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _redact(text: str) -> str:
    """Strip anything that could be an API key from a message before it is shown."""
    key = os.environ.get("WANDB_API_KEY")
    if key:
        text = text.replace(key, "***")
    return re.sub(r"\b\w{40,}\b", "***", text)


def _is_rank_zero() -> bool:
    # Safety net under torchrun: the trainer already gives other ranks a NullLogger.
    return os.environ.get("RANK", "0") == "0"


# -- CSV -------------------------------------------------------------------------------------
class CSVLogger(NullLogger):
    """``metrics.csv`` (one row per ``log_metrics`` call) and ``hparams.yaml``, in Lightning's layout.

    Files go to ``save_dir/name/version_N/`` (`log_dir`): `version` None takes the next free
    number when the first file is written; an int gives ``version_<int>``, a string names the
    folder itself; ``name=""`` or None drops that level. A resumed run keeps its version (the
    checkpoint records it) and appends to its own file. `prefix` is joined to every metric
    name with "-". Columns are sorted by name, as Lightning's, and grow as new metric names
    appear: the file is then rewritten with the wider header (through a temporary file and an atomic rename, so a crash never leaves
    half a file). Rows are written at each call (`flush_logs_every_n_steps` is accepted).
    Checkpoints, watch, the summary and finalize are NullLogger's no-ops.
    """

    def __init__(
        self,
        save_dir: str | Path,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
        metrics_file: str = "metrics.csv",
        hparams_file: str = "hparams.yaml",
    ):
        self._save_dir = Path(save_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix
        self.flush_logs_every_n_steps = flush_logs_every_n_steps
        self._metrics_file, self._hparams_file = metrics_file, hparams_file
        self._columns: list[str] | None = None  # read lazily from an existing file (resume)
        self._hparams: dict[str, Any] = {}
        self._step: int | None = None
        self._resume_step: int | None = None

    # -- Lightning's layout ------------------------------------------------------------------
    @property
    def save_dir(self) -> str:
        return str(self._save_dir)

    @property
    def name(self) -> str:
        return self._name

    @property
    def root_dir(self) -> str:
        return str(self._save_dir / self._name) if self._name else str(self._save_dir)

    @property
    def version(self) -> int | str:
        """The version folder's number (or name); the next free one, fixed at first use."""
        if self._version is None:
            self._version = self._next_version()
        return self._version

    @property
    def log_dir(self) -> str:
        version = self.version
        return str(Path(self.root_dir) / (version if isinstance(version, str) else f"version_{version}"))

    @property
    def experiment(self) -> CSVLogger:
        return self

    @property
    def metrics_path(self) -> Path:
        return Path(self.log_dir) / self._metrics_file

    @property
    def hparams_path(self) -> Path:
        return Path(self.log_dir) / self._hparams_file

    def _next_version(self) -> int:
        root = Path(self.root_dir)
        taken = [
            int(p.name.removeprefix("version_"))
            for p in (root.iterdir() if root.is_dir() else [])
            if p.is_dir() and p.name.startswith("version_") and p.name.removeprefix("version_").isdigit()
        ]
        return max(taken) + 1 if taken else 0

    def save(self) -> None:
        """Lightning's flush; rows are already on disk."""

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        import yaml

        if not isinstance(params, Mapping) and hasattr(params, "__dict__"):
            params = vars(params)  # an argparse Namespace, as Lightning accepts
        _merge(self._hparams, _plain(params))
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        tmp = self.hparams_path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(self._hparams, sort_keys=False))
        os.replace(tmp, self.hparams_path)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if step is None:  # Lightning's default: the next row number
            step = self._step + 1 if self._step is not None else 0
        prefix = f"{self._prefix}-" if self._prefix else ""
        row = {"step": int(step), **{prefix + k: _scalar(v) for k, v in metrics.items()}}
        if self._columns is None:
            self._open()
        assert self._columns is not None
        new = [k for k in row if k not in self._columns]
        if new:
            self._columns = sorted(self._columns + new)
            self._rewrite([row])
        else:
            with self.metrics_path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns).writerow(row)
        self._step = int(step)

    def _read_rows(self) -> list[dict[str, str]]:
        if not self.metrics_path.exists():
            return []
        with self.metrics_path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _open(self) -> None:
        """Pick up an existing file (a resumed run appends), dropping rows past the resumed step."""
        self._columns = ["step"]
        if not self.metrics_path.exists():
            return
        with self.metrics_path.open(newline="") as f:
            self._columns = list(csv.DictReader(f).fieldnames or ["step"])
        if self._resume_step is not None:
            self._rewrite([], keep=lambda r: int(r["step"]) <= self._resume_step)

    def _rewrite(self, extra: list[dict[str, Any]], keep: Any = None) -> None:
        rows = [r for r in self._read_rows() if keep is None or keep(r)] + extra
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.metrics_path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns or ["step"])
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_path)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self._step, "version": self.version}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._resume_step = state.get("step")
        if self._version is None and state.get("version") is not None:
            self._version = state["version"]  # a resumed run writes on in its own folder
        self._columns = None


# -- Weights & Biases ------------------------------------------------------------------------
class _NoopExperiment:
    """Stands in for a W&B run when there is none, so ``logger.experiment.log(...)`` is safe."""

    def __getattr__(self, name: str) -> _NoopExperiment:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> _NoopExperiment:
        return self


def _env_mode() -> str | None:
    """The mode the environment asks for (``WANDB_MODE``, ``WANDB_DISABLED``), if any."""
    if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        return "disabled"
    mode = os.environ.get("WANDB_MODE", "").lower()
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)  # wandb's older names
    return mode if mode in ("online", "offline", "disabled") else None


def _new_run_id() -> str:
    """Eight random base-36 characters, as wandb makes them."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _has_credentials(wandb: Any) -> bool:
    """Whether W&B would log in without a prompt: env key, ``wandb login`` (netrc), settings."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        # wandb's own check ("to check for credentials without prompting, use
        # wandb.login(prompt=False)"): env, settings files, .netrc; never prompts.
        return bool(wandb.login(prompt=False, verify=False))
    except TypeError:  # wandb < 0.20 has no `prompt` argument
        return bool(getattr(getattr(wandb, "api", None), "api_key", None))
    except Exception:  # credentials exist but are malformed: let init fail and fall back
        return True


class WandbLogger:
    """Log to Weights & Biases, Lightning's ``WandbLogger`` made robust for long runs.

    - ``mode``: ``auto`` is online when an API key or ``wandb login`` exists, else offline; under
      SLURM (``SLURM_JOB_ID``) always offline (``wandb sync`` uploads it later)
      (``WANDB_MODE`` in the environment wins); offline runs end by printing the exact
      ``wandb sync`` command. ``disabled`` records nothing and does not import wandb.
    - The run starts at the first log call, or when the trainer calls `start` at fit start,
      after a checkpoint's ``load_state_dict`` has reattached it to the same run id
      (``resume="allow"``) and the sanity check passed: W&B's start-up wait comes before
      training, a run that fails in its first steps is still recorded, and a start that fails
      (a missing or misfitting checkpoint) records nothing.
    - A checkpoint of another run (saved under another ``name``, or an ``id`` passed here that
      differs from its run id) is not reattached: this is a new run whose config records
      ``parent`` (``run_name``, ``wandb_run_id``, ``checkpoint``).
    - Metrics are plotted against ``trainer/global_step`` (``define_metric``), never wandb's own
      ``step``, so a resumed run never hits "step must only increase".
    - ``log_model``: checkpoints as ``model``-type artifacts named ``model-<run id>``, with
      aliases ``best``/``latest`` and metadata ``score``, ``step``, ``epoch``; ``all`` logs each
      save, ``best``/``last``/``True`` log at the end.
    - A failing ``wandb.init`` (no network, bad key, server error, timeout) warns once and falls
      back to offline, then to disabled; logging errors warn and never stop training.
      ``init_timeout`` (seconds) bounds the online attempt: with no network it gives up then.
    - W&B's own run header and footer are quieted (``Settings(quiet=True)``) unless the
      settings or ``WANDB_QUIET``/``WANDB_SILENT`` say otherwise: the end-of-run lines say it once.
    - Extra keyword arguments go to ``wandb.init`` (e.g. ``settings=``, ``resume=``).

    Lightning's arguments work too: ``id``/``version`` (the run id), ``offline=True``, ``dir``
    (instead of ``save_dir``), ``anonymous``, ``experiment`` (a run already started),
    ``prefix`` (metric keys become ``<prefix>-<key>``), ``checkpoint_name`` (the model artifact's
    name). Lightning's methods: ``experiment``, ``log_image``, ``log_table``, ``log_text``,
    ``log_hyperparams``, ``log_metrics(metrics, step=None)``, ``watch(model, log, log_freq)``.
    """

    def __init__(
        self,
        project: str | None = None,
        entity: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
        notes: str | None = None,
        job_type: str | None = None,
        mode: str = "auto",
        save_dir: str | Path = ".",
        log_model: bool | str = False,
        watch: bool | str = False,
        watch_log_freq: int = 100,
        run_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        init_timeout: float | None = None,
        finish_timeout: float | None = None,
        *,
        version: str | None = None,
        offline: bool = False,
        dir: str | Path | None = None,  # noqa: A002 (Lightning's name)
        id: str | None = None,  # noqa: A002 (Lightning's name)
        anonymous: bool | None = None,
        experiment: Any = None,
        prefix: str = "",
        checkpoint_name: str | None = None,
        add_file_policy: str = "mutable",
        print_sync_command: bool = True,
        **init_kwargs: Any,
    ):
        if offline and mode == "auto":
            mode = "offline"
        if dir is not None and str(save_dir) == ".":
            save_dir = dir
        run_id = run_id or id or version
        if anonymous:
            init_kwargs.setdefault("anonymous", "allow")
        if mode not in MODES:
            raise ValueError(f"wandb.mode={mode!r} is not one of {', '.join(MODES)}")
        if log_model not in LOG_MODEL:
            raise ValueError(f"wandb.log_model={log_model!r} is not one of false, true, best, last, all")
        if watch is True:
            watch = "gradients"
        if watch not in WATCH:
            raise ValueError(f"wandb.watch={watch!r} is not one of false, gradients, parameters, all")
        if mode != "disabled" and importlib.util.find_spec("wandb") is None:
            raise ModuleNotFoundError(
                "WandbLogger needs the wandb package: `pip install wandb`, or set wandb.mode=disabled"
            )
        self.project, self.entity, self.name, self.group = project, entity, name, group
        self.tags, self.notes, self.job_type = list(tags or ()), notes, job_type
        self.mode, self.save_dir = mode, Path(save_dir)
        self.log_model, self.watch_mode, self.watch_log_freq = log_model, watch, watch_log_freq
        self.init_timeout, self.finish_timeout, self.init_kwargs = init_timeout, finish_timeout, init_kwargs
        self.print_sync_command = print_sync_command  # False when the caller reports the run itself
        self.url: str | None = None  # the online run's page
        self._config: dict[str, Any] = _plain(dict(config or {}))
        self._run: Any = None
        self._run_mode: str | None = None  # online | offline | disabled, once started
        # The id is fixed up front, so the first checkpoint already carries it (resume reattaches).
        self._run_id = run_id or os.environ.get("WANDB_RUN_ID") or _new_run_id()
        self._id_given = bool(run_id)  # an id passed in wins over a checkpoint's: that run is a parent
        self._sync_dir: str | None = None
        self._watch_queue: list[tuple[Any, str | None, int, bool]] = []
        self._step: int | None = None
        self._best_path, self._last_path, self._monitor = "", "", None
        self._checkpoints: dict[str, dict[str, Any]] = {}  # path -> score, step, epoch, stamp, logged
        self._warned: set[str] = set()
        self.prefix, self.checkpoint_name, self.add_file_policy = prefix, checkpoint_name, add_file_policy
        self._watched: set[int] = set()  # id() of modules already hooked: the trainer's call is then a no-op
        if experiment is not None:  # Lightning's experiment=: log into a run the caller started
            self._start(experiment, "offline" if getattr(experiment.settings, "mode", "") == "offline" else "online")

    # -- the run -----------------------------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        """The W&B run id: known before the run starts; None when this logger records nothing."""
        if self._run is not None and self._run_mode != "disabled":
            return self._run.id
        return self._run_id if self._may_log() else None

    def _may_log(self) -> bool:
        if self.mode == "disabled" or self._run_mode == "disabled" or not _is_rank_zero():
            return False
        return self.mode != "auto" or _env_mode() != "disabled"

    @property
    def run_mode(self) -> str | None:
        """``online``, ``offline`` or ``disabled`` once the run started (after any fallback)."""
        return self._run_mode

    @property
    def experiment(self) -> Any:
        """The ``wandb`` run (started on first access), or a no-op stand-in when disabled."""
        run = self._ensure_run()
        return run if run is not None else _NoopExperiment()

    @property
    def needs_checkpoint_files(self) -> bool:
        """True when ``after_save_checkpoint`` reads the file: an async saver must finish it first."""
        return self.log_model == "all"

    @property
    def sync_command(self) -> str | None:
        """``wandb sync <run dirs>`` for an offline run (all parts of a resumed run, oldest first)."""
        if self._run_mode != "offline" or not self._sync_dir or not self.run_id:
            return None
        wandb_dir = Path(self._sync_dir).parent
        pattern = re.compile(rf"^offline-run-\d{{8}}_\d{{6}}-{re.escape(self.run_id)}(-\d+)?$")
        dirs = [p for p in sorted(wandb_dir.glob("offline-run-*")) if pattern.match(p.name)]
        dirs = [p for p in dirs if (p / f"run-{self.run_id}.wandb").exists()] or [Path(self._sync_dir)]
        return "wandb sync " + " ".join(_shell_path(p) for p in dirs)

    def _resolve_mode(self, wandb: Any) -> str:
        if self.mode != "auto":
            return self.mode
        env_mode = _env_mode()
        if env_mode:
            return env_mode
        if os.environ.get("SLURM_JOB_ID"):  # compute nodes often have no internet: no start waits on one
            return "offline"
        return "online" if _has_credentials(wandb) else "offline"

    def _ensure_run(self) -> Any:
        """Start the run on first use (or return the running one); None when there is none."""
        if self._run is not None or self._run_mode == "disabled":
            return self._run if self._run_mode != "disabled" else None
        if not self._may_log():
            self._run_mode = "disabled"
            return None
        try:
            self._init_run()
        except Exception as err:  # anything unexpected while starting: never stop training for W&B
            self._run = None
            warnings.warn(
                f"W&B could not start ({type(err).__name__}: {_redact(str(err))}); training continues without it.",
                RuntimeWarning,
                stacklevel=3,
            )
        if self._run is None:
            self._run_mode = "disabled"
        return self._run if self._run_mode != "disabled" else None

    def _init_run(self) -> None:
        import wandb

        self._run_mode = self._sync_dir = None
        mode = self._resolve_mode(wandb)
        if mode == "disabled":
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {
            "project": self.project,
            "entity": self.entity,
            "name": self.name,
            "group": self.group,
            "tags": self.tags or None,
            "notes": self.notes,
            "job_type": self.job_type,
            "dir": str(self.save_dir),  # W&B writes to <save_dir>/wandb/
            "config": self._config,
            **self.init_kwargs,
        }
        if not os.environ.get("WANDB_SWEEP_ID"):  # a sweep agent picks the run id itself
            kwargs.update(id=self._run_id, resume=self.init_kwargs.get("resume", "allow"))
        kwargs["settings"] = self._settings(wandb, kwargs.get("settings"))

        failures: list[str] = []
        for attempt in [mode, "offline"] if mode == "online" else [mode]:
            if failures and wandb.run is None:
                # wandb-core still holds the failed online run's id ("run ID ... is in use"):
                # restart it so the offline run can keep the id (there is no other run to lose).
                wandb.teardown()
            try:
                run = wandb.init(mode=attempt, **kwargs)
            except Exception as err:  # no network, bad key, server error, timeout ...
                first_line = (_redact(str(err)).strip().splitlines() or [""])[0]  # wandb adds advice lines
                failures.append(f"{attempt}: {type(err).__name__}: {first_line}")
                continue
            self._start(run, attempt)
            break
        if failures:
            self._warn_init(mode, failures)

    def _settings(self, wandb: Any, settings: Any) -> Any:
        settings = wandb.Settings(**settings) if isinstance(settings, dict) else settings or wandb.Settings()
        if self.init_timeout is not None:
            settings.init_timeout = self.init_timeout
        if self.finish_timeout is not None:  # give up uploading after this long; `wandb sync` the rest
            settings.finish_timeout = self.finish_timeout
        chosen = getattr(settings, "model_fields_set", set())
        env_says = any(os.environ.get(v) for v in ("WANDB_QUIET", "WANDB_SILENT"))
        if "quiet" in getattr(type(settings), "model_fields", {}) and not ({"quiet", "silent"} & chosen or env_says):
            settings.quiet = True  # no "Tracking run ..." header or "You can sync ..." footer
        # wandb-core buffers the run file for 15 s: a SIGKILLed offline run (OOM killer, the
        # end of a SLURM grace period) would lose that much. Flush every 2 s unless told otherwise.
        fields = getattr(type(settings), "model_fields", {})
        if FLUSH_SETTING in fields and FLUSH_SETTING not in getattr(settings, "model_fields_set", {FLUSH_SETTING}):
            setattr(settings, FLUSH_SETTING, 2.0)
        return settings

    def _start(self, run: Any, mode: str) -> None:
        self._run = run
        if getattr(run, "disabled", False):  # e.g. wandb gave up logging in and returned a no-op run
            self._run_mode = "disabled"
            return
        self._run_mode = mode
        self._run_id = run.id
        self._sync_dir = getattr(run, "sync_dir", None) or getattr(run.settings, "sync_dir", None)
        if mode == "online":  # an offline run's url warns that there is none
            self.url = getattr(run, "url", None)
        # Every metric is plotted against the trainer's step, not wandb's internal counter.
        run.define_metric(STEP_KEY)
        run.define_metric("*", step_metric=STEP_KEY)
        for module, log, log_freq, log_graph in self._watch_queue:
            run.watch(module, log=log, log_freq=log_freq, log_graph=log_graph)
        self._watch_queue.clear()

    def _warn_init(self, mode: str, failures: list[str]) -> None:
        tried = "; ".join(failures)
        if self._run_mode == "offline":
            article = "an" if mode[0] in "aeiou" else "a"
            within = f" within {self.init_timeout:g} s" if self.init_timeout is not None else ""
            msg = (
                f"W&B could not start {article} {mode} run{within} ({tried}). Logging offline instead to "
                f"{self._sync_dir}; upload it later with `{self.sync_command}`. Set wandb.mode=offline to skip "
                "the online attempt, or raise wandb.init_timeout on a slow network."
            )
        else:
            msg = (
                f"W&B could not start a run ({tried}); training continues without W&B. "
                "Set wandb.mode=disabled to silence this."
            )
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a wandb call; an error warns (once per kind of call) instead of stopping training."""
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if what not in self._warned:
                self._warned.add(what)
                warnings.warn(
                    f"W&B {what} failed ({type(err).__name__}: {_redact(str(err))}); training continues.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return None

    # -- the protocol ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the run now (the trainer calls it at fit start, once a checkpoint has been restored)."""
        self._ensure_run()

    def log_hyperparams(self, params: Mapping[str, Any] | argparse.Namespace) -> None:
        params = _plain(vars(params) if isinstance(params, argparse.Namespace) else dict(params))
        _merge(self._config, params)
        if self._run is not None and self._run_mode != "disabled":
            update = {k: self._config[k] for k in params}
            self._guard("config update", self._run.config.update, update, allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log a row of values (numbers, or W&B media and tables) at ``step`` (None: the last step)."""
        run = self._ensure_run()
        if run is None:
            return
        row = {f"{self.prefix}-{k}" if self.prefix else k: _scalar(v) for k, v in metrics.items()}
        step = self._step if step is None else int(step)
        row[STEP_KEY] = step or 0
        self._guard("log", run.log, row)
        self._step = step

    def watch(
        self, module: Any, log: str | None | bool = True, log_freq: int | None = None, log_graph: bool = True
    ) -> None:
        """Record gradient/parameter histograms (``wandb.watch``) every ``log_freq`` steps.

        ``log``: "gradients", "parameters", "all" or None (graph only); left out, the ``watch=``
        mode given to the constructor, else "gradients" (Lightning's default). A module already
        watched is not hooked twice.
        """
        if log is True:
            log = self.watch_mode or "gradients"
        if log is False or id(module) in self._watched:
            return
        self._watched.add(id(module))
        log_freq = log_freq or self.watch_log_freq
        if self._run is not None and self._run_mode != "disabled":
            self._guard("watch", self._run.watch, module, log=log, log_freq=log_freq, log_graph=log_graph)
        else:  # applied when the run starts, so a resume can still pick the run id first
            self._watch_queue.append((module, log, log_freq, log_graph))

    # -- Lightning's media helpers ---------------------------------------------------------------
    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs: Any) -> None:
        """Log images (tensors, arrays, PIL images or paths); each keyword is a list with one
        entry per image (``caption=[...]``, ``masks=[...]``), as in Lightning."""
        self._log_media(key, images, step, kwargs, "Image")

    def log_audio(self, key: str, audios: list[Any], step: int | None = None, **kwargs: Any) -> None:
        self._log_media(key, audios, step, kwargs, "Audio")

    def log_video(self, key: str, videos: list[Any], step: int | None = None, **kwargs: Any) -> None:
        self._log_media(key, videos, step, kwargs, "Video")

    def _log_media(self, key: str, items: list[Any], step: int | None, kwargs: dict[str, Any], kind: str) -> None:
        if not isinstance(items, (list, tuple)):
            raise TypeError(f'{key}: pass a list of {kind.lower()}s, e.g. log_{kind.lower()}("{key}", [x])')
        for name, values in kwargs.items():
            if len(values) != len(items):
                raise ValueError(f"{key}: {name} has {len(values)} entries for {len(items)} {kind.lower()}s")
        if self._ensure_run() is None:
            return
        import wandb

        media = getattr(wandb, kind)  # e.g. wandb.Image needs pillow: a failure warns, training goes on
        built = self._guard(
            f"log_{kind.lower()}",
            lambda: [media(item, **{k: v[i] for k, v in kwargs.items()}) for i, item in enumerate(items)],
        )
        if built is not None:
            self.log_metrics({key: built}, step)

    def log_table(
        self,
        key: str,
        columns: list[str] | None = None,
        data: list[list[Any]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
    ) -> None:
        """Log a ``wandb.Table`` (rows in ``data`` under ``columns``, or a pandas ``dataframe``)."""
        if self._ensure_run() is None:
            return
        import wandb

        table = self._guard("log_table", wandb.Table, columns=columns, data=data, dataframe=dataframe)
        if table is not None:
            self.log_metrics({key: table}, step)

    def log_text(
        self,
        key: str,
        columns: list[str] | None = None,
        data: list[list[str]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
    ) -> None:
        """Log text as a table (Lightning's ``log_text``)."""
        self.log_table(key, columns, data, dataframe, step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Update a started run's summary; a run that never started (a failed start) records nothing."""
        if self._run is None or self._run_mode == "disabled":
            return
        self._guard("summary", self._run.summary.update, _plain(dict(summary)))

    def after_save_checkpoint(
        self, checkpoint_callback: Any, *, step: int | None = None, epoch: int | None = None
    ) -> None:
        if not self.log_model or not _is_rank_zero():
            return
        cb = checkpoint_callback
        trainer = getattr(cb, "trainer", None)
        step = step if step is not None else getattr(trainer, "global_step", None)
        epoch = epoch if epoch is not None else getattr(trainer, "current_epoch", None)
        self._best_path = str(getattr(cb, "best_model_path", "") or "")
        self._last_path = str(getattr(cb, "last_model_path", "") or "")
        self._monitor = getattr(cb, "monitor", None)
        scores = {str(p): _scalar(s) for p, s in (getattr(cb, "best_k_models", None) or {}).items()}
        current = _scalar(getattr(cb, "current_score", None))
        # Remember when each file was (re)written, so artifacts logged at the end carry the
        # step/epoch of the checkpoint, not of the end of training.
        for path in [*scores, self._last_path]:
            stamp = _stamp(path)
            known = self._checkpoints.get(path)
            if stamp is not None and (known is None or known["stamp"] != stamp):
                score = scores.get(path, current)
                self._checkpoints[path] = {
                    "score": score,
                    "step": step,
                    "epoch": epoch,
                    "stamp": stamp,
                    "logged": False,
                }
        if self.log_model == "all":
            pending = [p for p, c in self._checkpoints.items() if not c["logged"] and _stamp(p) == c["stamp"]]
            for path in sorted(pending, key=lambda p: self._checkpoints[p]["step"] or 0):
                aliases = ["latest", "best"] if path == self._best_path else ["latest"]
                self._log_checkpoint(path, aliases)

    def _log_checkpoint(self, path: str, aliases: list[str]) -> None:
        info = self._checkpoints.get(path) or {"score": None, "step": None, "epoch": None, "stamp": _stamp(path)}
        if info["stamp"] is None or _stamp(path) is None:
            return
        run = self._ensure_run()
        if run is None:
            return
        import wandb

        score = info["score"]
        metadata = {
            "score": None if isinstance(score, float) and not math.isfinite(score) else score,
            "step": info["step"],
            "epoch": info["epoch"],
            "monitor": self._monitor,
            "original_filename": Path(path).name,
        }

        def log() -> None:
            artifact = wandb.Artifact(name=self.checkpoint_name or f"model-{run.id}", type="model", metadata=metadata)
            if Path(path).is_dir():  # a sharded (strategy=fsdp) checkpoint folder
                artifact.add_dir(str(path), name="model.ckpt", policy=self.add_file_policy)
            else:
                artifact.add_file(path, name="model.ckpt", policy=self.add_file_policy)
            run.log_artifact(artifact, aliases=aliases)

        self._guard("log_model", log)
        self._checkpoints[path] = {**info, "logged": True}

    def _log_final_checkpoints(self) -> None:
        last = self._last_path or self._best_path
        best = self._best_path or last
        wanted = {"best": [best], "last": [last], True: [best, last]}.get(self.log_model, [])
        for path in dict.fromkeys(p for p in wanted if p):  # best before last: last ends up `latest`
            aliases = [alias for alias, p in (("best", best), ("latest", last)) if p == path]
            if self.log_model == "best" and "latest" not in aliases:
                aliases.append("latest")
            info = self._checkpoints.get(path)
            if not (info and info["logged"] and info["stamp"] == _stamp(path)):
                self._log_checkpoint(path, aliases)

    def state_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "step": self._step,
            "best_model_path": self._best_path,
            "last_model_path": self._last_path,
            "checkpoints": {p: {**c, "stamp": list(c["stamp"] or ())} for p, c in self._checkpoints.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Reattach to the checkpoint's run (same name, no other id given), else record it as the parent.

        ``state["checkpoint"]``: the file it came from (the trainer adds it), recorded with the parent.
        """
        run_id = state.get("run_id")
        if self._run is not None and self._run_mode != "disabled":
            if run_id and run_id != self._run.id:
                warnings.warn(
                    f"WandbLogger.load_state_dict came after run {self._run.id} started; it cannot reattach to "
                    f"run {run_id}. Restore the checkpoint before the first log call.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return
        if run_id and run_id != self._run_id and (self._id_given or state.get("name", self.name) != self.name):
            # Another run's checkpoint (another name, or a run id given): this is a new W&B run
            # that records where it started; continuing would rename the parent and append to it.
            parent = self._config.setdefault("parent", {})
            parent.setdefault("run_name", state.get("name"))
            parent.setdefault("wandb_run_id", run_id)
            if state.get("checkpoint"):
                parent.setdefault("checkpoint", state["checkpoint"])
            return
        if run_id:
            self._run_id = run_id
        self._step = state.get("step", self._step)
        self._best_path = state.get("best_model_path", self._best_path) or ""
        self._last_path = state.get("last_model_path", self._last_path) or ""
        for path, c in (state.get("checkpoints") or {}).items():
            self._checkpoints[path] = {**c, "stamp": tuple(c.get("stamp") or ()) or None}

    def finalize(self, status: str = "success") -> None:
        """Log the final checkpoints, finish the run and print how to upload an offline run.

        Safe to call twice and from ``finally``; never raises. Logging after this reattaches to
        the same run id.
        """
        try:
            run = self._run
            if run is None or self._run_mode == "disabled":
                return
            if self.log_model:
                self._guard("log_model", self._log_final_checkpoints)
            self._guard("finish", run.finish, exit_code=EXIT_CODES.get(status, 1))
            command = self.sync_command
            self._run = None  # a later log call resumes the same run id
            if command and self.print_sync_command:
                print(f"wandb: run {self._run_id} was saved offline; upload it with:\n  {command}", flush=True)
        except Exception as err:  # finalize runs in `finally` blocks: it must not mask the real error
            warnings.warn(
                f"W&B finalize failed: {type(err).__name__}: {_redact(str(err))}", RuntimeWarning, stacklevel=2
            )


def _stamp(path: str) -> tuple[int, int] | None:
    """(mtime_ns, size) of a file, or None when it is missing: tells a rewritten checkpoint apart."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_mtime_ns, st.st_size)


def _shell_path(path: Path) -> str:
    """A path as short as it can be while staying exact: relative to the cwd when inside it."""
    try:
        text = str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        text = str(path)
    return text if re.fullmatch(r"[\w./@%+=:,-]+", text) else "'" + text.replace("'", "'\\''") + "'"


# -- several loggers --------------------------------------------------------------------------
class LoggerGroup:
    """Several loggers as one (``Trainer(logger=[a, b])``): every call goes to each of them.

    Loggers written for Lightning may lack the engine's extra calls (`watch`, `log_summary`,
    `state_dict` ...): a logger without a method is skipped for that call. Any other attribute
    (``trainer.logger.experiment``, ``.log_dir``) is the first logger's, as Lightning's
    `trainer.logger` is the first of `trainer.loggers`.
    """

    def __init__(self, loggers: list[Any]) -> None:
        self.loggers = list(loggers)

    def __getattr__(self, name: str) -> Any:
        if name == "loggers":  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.loggers[0], name)

    def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        for logger in self.loggers:
            fn = getattr(logger, method, None)
            if callable(fn):
                fn(*args, **kwargs)

    @property
    def run_id(self) -> str | None:
        return next((r for r in (getattr(lg, "run_id", None) for lg in self.loggers) if r), None)

    @property
    def needs_checkpoint_files(self) -> bool:
        return any(getattr(lg, "needs_checkpoint_files", False) for lg in self.loggers)

    def start(self) -> None:
        self._each("start")

    def log_hyperparams(self, params: Any) -> None:
        self._each("log_hyperparams", params)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        self._each("log_metrics", metrics, step=step)

    def after_save_checkpoint(
        self, checkpoint_callback: Any, *, step: int | None = None, epoch: int | None = None
    ) -> None:
        for logger in self.loggers:  # Lightning's loggers take only the callback
            if isinstance(logger, Logger):
                logger.after_save_checkpoint(checkpoint_callback, step=step, epoch=epoch)
            elif callable(getattr(logger, "after_save_checkpoint", None)):
                logger.after_save_checkpoint(checkpoint_callback)

    def watch(self, module: Any, log_freq: int | None = None) -> None:
        self._each("watch", module)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self._each("log_summary", summary)

    def state_dict(self) -> dict[str, Any]:
        states = [lg.state_dict() if callable(getattr(lg, "state_dict", None)) else {} for lg in self.loggers]
        return {"loggers": [s if isinstance(s, dict) else {} for s in states]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        extra = {"checkpoint": state["checkpoint"]} if "checkpoint" in state else {}  # the file, for each
        for logger, s in zip(self.loggers, state.get("loggers", []), strict=False):
            if callable(getattr(logger, "load_state_dict", None)):
                logger.load_state_dict({**s, **extra})

    def finalize(self, status: str) -> None:
        self._each("finalize", status)


def make_logger(logger: Any, save_dir: str | Path) -> tuple[Any, list[Any]]:
    """`trainer.logger` and `trainer.loggers` from Lightning's ``logger=`` forms.

    None or True: a CSVLogger under `save_dir` (``lightning_logs/version_N``: Lightning's default
    when TensorBoard is absent, and the engine has no TensorBoard); False or []: nothing is
    logged; a logger; a list of loggers (all receive everything).
    """
    if logger is False:
        return NullLogger(), []
    if logger is None or logger is True:
        logger = CSVLogger(save_dir)
    loggers = list(logger) if isinstance(logger, (list, tuple)) else [logger]
    loggers = [CSVLogger(save_dir) if lg is True else lg for lg in loggers if lg is not None and lg is not False]
    if not loggers:
        return NullLogger(), []
    if len(loggers) == 1 and isinstance(loggers[0], Logger):
        return loggers[0], loggers
    return LoggerGroup(loggers), loggers


def _gets_lightning_step(logger: Any) -> bool:
    """CSVLogger and loggers written for Lightning (not the engine's `Logger` protocol: W&B,
    whose x-axis is the trainer's global_step) get Lightning's step and an int epoch on each row."""
    return isinstance(logger, CSVLogger) or not isinstance(logger, Logger)


def send_metrics(logger: Any, metrics: Mapping[str, Any], global_step: int, lightning_step: int, epoch: int) -> None:
    """One row to each logger: at `global_step` for the engine's loggers; at Lightning's step (the
    optimizer steps before the current batch while fitting), with ``epoch`` added, for the others."""
    for each in logger.loggers if isinstance(logger, LoggerGroup) else [logger]:
        if not _gets_lightning_step(each):
            each.log_metrics(metrics, step=global_step)
            continue
        if not metrics.keys() - {"epoch"}:
            continue  # Lightning writes no row for an epoch number alone
        row = {**metrics, "epoch": int(metrics.get("epoch", epoch))}
        each.log_metrics(row, step=lightning_step)
        if callable(getattr(each, "save", None)):  # Lightning saves after each row
            each.save()


def lightning_hparams(module: Any, datamodule: Any) -> dict[str, Any]:
    """What Lightning logs as hyperparameters: the module's, then the datamodule's, in one flat dict.

    A name both define with different values is an error, as in Lightning (which one is meant?).
    """
    ours = _plain(dict(getattr(module, "hparams", None) or {}))
    theirs = _plain(dict(getattr(datamodule, "hparams", None) or {}))
    clash = sorted(k for k in ours.keys() & theirs.keys() if ours[k] != theirs[k])
    if clash:
        raise RuntimeError(
            f"hparams {', '.join(clash)} differ between the module and the datamodule; "
            "rename one of them or give both the same value"
        )
    return {**ours, **theirs}


__all__ = ["STEP_KEY", "CSVLogger", "Logger", "LoggerGroup", "NullLogger", "WandbLogger", "make_logger"]
