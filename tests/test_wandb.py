"""WandbLogger against real wandb in offline mode: assert what the run file recorded."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from engine_fixtures import Regressor, loader, make_trainer, regression_data
from gen_helpers import new_project, template_repo
from wandb_records import RunRecords, load_run, load_runs, offline_run_dirs

from engine import Callback, ModelCheckpoint
from engine.loggers import STEP_KEY, WandbLogger

wandb = pytest.importorskip("wandb")

FAKE_KEY = "f" * 40
__all__ = ["template_repo"]  # a fixture


@pytest.fixture(scope="module", autouse=True)
def wandb_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No credentials, no network, nothing written outside tmp; a fresh wandb session."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("WANDB_") or name in ("RANK", "NETRC"):
                mp.delenv(name)
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_CONSOLE", "off")  # no stdout capture: faster, and keeps capsys simple
        mp.setenv("NETRC", str(home / "netrc-absent"))
        for var in ("WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(home / var.lower()))
        wandb.teardown()  # settings are read once per session: start one with this environment
        yield home
        wandb.teardown()


class FakeCheckpoint:
    """What ModelCheckpoint exposes to a logger, with real files on disk."""

    def __init__(self, dirpath: Path, monitor: str = "val_acc") -> None:
        self.dirpath, self.monitor = dirpath, monitor
        self.best_k_models: dict[str, float] = {}
        self.best_model_path = self.last_model_path = ""
        self.best_model_score: float | None = None

    def save(self, logger: WandbLogger, step: int, epoch: int, score: float, top_k: int = 1) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = str(self.dirpath / f"epoch={epoch}-step={step}.ckpt")
        if len(self.best_k_models) < top_k or score > min(self.best_k_models.values()):
            Path(path).write_bytes(f"weights at {step}".encode())
            self.best_k_models[path] = score
            if len(self.best_k_models) > top_k:
                worst = min(self.best_k_models, key=self.best_k_models.__getitem__)
                del self.best_k_models[worst]
                Path(worst).unlink()
            self.best_model_path = max(self.best_k_models, key=self.best_k_models.__getitem__)
            self.best_model_score = self.best_k_models[self.best_model_path]
            logger.after_save_checkpoint(self, step=step, epoch=epoch)
        self.last_model_path = str(self.dirpath / "last.ckpt")
        Path(self.last_model_path).write_bytes(f"last at {step}".encode())
        logger.after_save_checkpoint(self, step=step, epoch=epoch)


def only_run(save_dir: Path) -> RunRecords:
    runs = load_runs(save_dir)
    assert len(runs) == 1, [r.path for r in runs]
    return runs[0]


# -- one full run, shared by the assertions below ---------------------------------------------
@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    save_dir = tmp_path_factory.mktemp("project")
    logger = WandbLogger(
        project="digits",
        name="baseline",
        group="ablation",
        tags=("cnn", "small"),
        notes="first try",
        job_type="train",
        mode="offline",
        save_dir=save_dir,
        log_model="all",
        watch="all",
        watch_log_freq=1,
    )
    model = torch.nn.Linear(3, 2)
    logger.log_hyperparams({"config": {"trainer": {"max_epochs": 2}, "model": {"hidden": 8, "lr": 0.01}}})
    logger.log_hyperparams({"hparams": {"hidden": 8, "lr": 0.01}})
    logger.watch(model)  # queued until the run starts, then hooked with wandb.watch
    ckpt = FakeCheckpoint(save_dir / "runs" / "baseline" / "checkpoints")
    for step, acc in zip((5, 10, 15), (0.5, 0.8, 0.7), strict=True):
        model(torch.randn(4, 3)).sum().backward()
        logger.log_metrics({"train_loss": torch.tensor(1.0 / step), "epoch": float(step // 10)}, step=step)
        logger.log_metrics({"val_acc": acc}, step=step)
        ckpt.save(logger, step=step, epoch=step // 10, score=acc)
    logger.log_summary({"best_model_score": 0.8, "stop_reason": "max_epochs", "metrics": {"val_acc": 0.7}})
    state = logger.state_dict()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        logger.finalize("success")
        logger.finalize("success")  # idempotent
    return SimpleNamespace(logger=logger, save_dir=save_dir, run=only_run(save_dir), state=state, stdout=out.getvalue())


def test_files_live_in_the_project_wandb_folder(full_run: SimpleNamespace) -> None:
    (run_dir,) = offline_run_dirs(full_run.save_dir)
    assert run_dir.parent == full_run.save_dir / "wandb"
    assert run_dir.name.endswith(f"-{full_run.logger.run_id}")
    assert full_run.run.run_id == full_run.logger.run_id == full_run.state["run_id"]
    assert full_run.run.exit_code == 0


def test_metrics_are_recorded_at_the_trainer_step(full_run: SimpleNamespace) -> None:
    run = full_run.run
    assert run.column("train_loss") == {5: pytest.approx(0.2), 10: pytest.approx(0.1), 15: pytest.approx(1 / 15)}
    assert run.column("val_acc") == {5: 0.5, 10: 0.8, 15: 0.7}
    assert run.column("epoch") == {5: 0.0, 10: 1.0, 15: 1.0}
    # Every chart uses trainer/global_step as its x-axis (a resumed run never goes backwards).
    assert {"name": STEP_KEY, "glob_name": "", "step_metric": ""} in run.metrics
    assert {"name": "", "glob_name": "*", "step_metric": STEP_KEY} in run.metrics


def test_run_identity_and_config(full_run: SimpleNamespace) -> None:
    run = full_run.run
    assert (run.project, run.name, run.group, run.job_type, run.notes) == (
        "digits",
        "baseline",
        "ablation",
        "train",
        "first try",
    )
    assert run.tags == ["cnn", "small"]
    assert run.config["config"] == {"trainer": {"max_epochs": 2}, "model": {"hidden": 8, "lr": 0.01}}
    assert run.config["hparams"] == {"hidden": 8, "lr": 0.01}


def test_summary_has_best_score_stop_reason_and_final_metrics(full_run: SimpleNamespace) -> None:
    summary = full_run.run.summary
    assert summary["best_model_score"] == 0.8
    assert summary["stop_reason"] == "max_epochs"
    assert summary["metrics"] == {"val_acc": 0.7}
    assert summary["val_acc"] == 0.7 and summary[STEP_KEY] == 15


def test_watch_records_gradient_and_parameter_histograms(full_run: SimpleNamespace) -> None:
    rows = [r for r in full_run.run.history if "gradients/weight/_type" in r]
    assert rows and all(r["gradients/weight/_type"] == "histogram" for r in rows)
    assert any(r.get("parameters/bias/_type") == "histogram" for r in full_run.run.history)
    assert {r[STEP_KEY] for r in rows} <= {5, 10, 15}


def test_log_model_all_logs_every_save_with_aliases_and_metadata(full_run: SimpleNamespace) -> None:
    arts = full_run.run.artifacts
    run_id = full_run.logger.run_id
    assert {a["name"] for a in arts} == {f"model-{run_id}"} and {a["type"] for a in arts} == {"model"}
    assert all(a["files"] == ["model.ckpt"] for a in arts)
    top = [a for a in arts if a["metadata"]["original_filename"] != "last.ckpt"]
    last = [a for a in arts if a["metadata"]["original_filename"] == "last.ckpt"]
    # Top-1 by val_acc: step 5 (0.5) then step 10 (0.8); step 15 (0.7) is not kept.
    assert [(a["metadata"]["step"], a["metadata"]["score"], sorted(a["aliases"])) for a in top] == [
        (5, 0.5, ["best", "latest"]),
        (10, 0.8, ["best", "latest"]),
    ]
    assert [a["metadata"]["step"] for a in last] == [5, 10, 15]
    assert all(a["aliases"] == ["latest"] and a["metadata"]["monitor"] == "val_acc" for a in last)
    assert top[1]["metadata"]["epoch"] == 1


def test_offline_run_ends_with_the_sync_command(full_run: SimpleNamespace) -> None:
    (run_dir,) = offline_run_dirs(full_run.save_dir)
    assert full_run.logger.sync_command == f"wandb sync {run_dir}"
    assert full_run.stdout.count("wandb sync") == 1  # printed once although finalize ran twice
    assert f"wandb sync {run_dir}" in full_run.stdout


def test_state_dict_is_plain_and_loads_with_weights_only(full_run: SimpleNamespace, tmp_path: Path) -> None:
    torch.save({"logger": full_run.state}, tmp_path / "c.ckpt")
    assert torch.load(tmp_path / "c.ckpt", weights_only=True)["logger"] == full_run.state


# -- log_model at the end of training -----------------------------------------------------------
@pytest.mark.parametrize(
    ("log_model", "expected"),
    [
        ("best", [("epoch=0-step=10.ckpt", ["best", "latest"], 10, 0.8)]),
        ("last", [("last.ckpt", ["latest"], 20, None)]),
        # wandb tags every new version `latest`; the server keeps it on the newest one: last.ckpt.
        (True, [("epoch=0-step=10.ckpt", ["best", "latest"], 10, 0.8), ("last.ckpt", ["latest"], 20, None)]),
    ],
)
def test_log_model_at_the_end(tmp_path: Path, log_model: Any, expected: list) -> None:
    logger = WandbLogger(project="p", mode="offline", save_dir=tmp_path, log_model=log_model)
    ckpt = FakeCheckpoint(tmp_path / "checkpoints")
    for step, acc in ((10, 0.8), (20, 0.6)):
        logger.log_metrics({"val_acc": acc}, step=step)
        ckpt.save(logger, step=step, epoch=0, score=acc)
    logger.finalize("success")
    run = only_run(tmp_path)
    kinds = [r.WhichOneof("record_type") for r in run.records]
    assert kinds.index("artifact") > max(i for i, k in enumerate(kinds) if k == "history")  # logged at the end
    arts = run.artifacts
    got = [
        (a["metadata"]["original_filename"], sorted(a["aliases"]), a["metadata"]["step"], a["metadata"]["score"])
        for a in arts
    ]
    assert got == expected
    assert {a["name"] for a in arts} == {f"model-{logger.run_id}"}


# -- resume ---------------------------------------------------------------------------------
def test_resumed_logger_writes_to_the_same_run_id(tmp_path: Path) -> None:
    first = WandbLogger(project="p", mode="offline", save_dir=tmp_path)
    for step in (1, 2, 3):
        first.log_metrics({"loss": 1.0 / step}, step=step)
    state = first.state_dict()  # what the checkpoint holds
    first.finalize("interrupted")

    second = WandbLogger(project="p", mode="offline", save_dir=tmp_path)
    second.load_state_dict(state)
    assert second.run_id == state["run_id"]  # known before the run starts
    for step in (4, 5):
        second.log_metrics({"loss": 1.0 / step}, step=step)
    second.finalize("success")

    runs = load_runs(tmp_path)
    assert [r.run_id for r in runs] == [state["run_id"]] * 2
    assert [r.exit_code for r in runs] == [130, 0]
    assert runs[0].column("loss") == {1: 1.0, 2: 0.5, 3: pytest.approx(1 / 3)}
    assert runs[1].column("loss") == {4: 0.25, 5: 0.2}
    # `wandb sync` uploads both parts of the run, oldest first.
    assert second.sync_command == "wandb sync " + " ".join(str(r.path.parent) for r in runs)


def test_run_id_is_fixed_before_the_run_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = WandbLogger(project="p", mode="offline", save_dir=tmp_path)
    early = logger.state_dict()["run_id"]  # e.g. a checkpoint saved before the first metric
    assert early and not (tmp_path / "wandb").exists()
    logger.log_metrics({"loss": 1.0}, step=1)
    logger.finalize("success")
    assert load_run(tmp_path).run_id == early == logger.run_id
    monkeypatch.setenv("WANDB_RUN_ID", "fromenv1")  # what a sweep agent sets
    assert WandbLogger(project="p", mode="offline").run_id == "fromenv1"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert WandbLogger(project="p").run_id is None  # auto mode, disabled by the environment


def test_logging_after_finalize_reattaches_to_the_same_run(tmp_path: Path) -> None:
    logger = WandbLogger(project="p", mode="offline", save_dir=tmp_path)
    logger.log_metrics({"val_acc": 0.5}, step=10)
    logger.finalize("success")
    logger.log_metrics({"test_acc": 0.4}, step=10)  # e.g. trainer.test() after fit
    logger.finalize("success")
    runs = load_runs(tmp_path)
    assert len(runs) == 2 and runs[0].run_id == runs[1].run_id == logger.run_id
    assert runs[1].column("test_acc") == {10: 0.4}


# -- modes ----------------------------------------------------------------------------------
def test_auto_mode_is_offline_without_credentials_and_prints_sync(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = WandbLogger(project="p", save_dir=tmp_path)  # mode="auto"
    logger.log_metrics({"loss": 1.0}, step=1)
    assert logger.run_mode == "offline"
    logger.finalize("success")
    (run_dir,) = offline_run_dirs(tmp_path)
    out = capsys.readouterr().out
    assert re.search(rf"^  wandb sync {re.escape(str(run_dir))}$", out, re.M), out


def test_auto_mode_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    logger = WandbLogger(project="p", save_dir=tmp_path)
    assert logger._resolve_mode(wandb) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert logger._resolve_mode(wandb) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment wins over auto
    assert logger._resolve_mode(wandb) == "disabled"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.delenv("WANDB_MODE")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # what `wandb login` writes
    assert logger._resolve_mode(wandb) == "online"
    assert list(tmp_path.iterdir()) == [netrc]  # checking wrote nothing


def test_disabled_mode_and_other_ranks_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def drive(logger: WandbLogger) -> None:
        logger.log_hyperparams({"a": 1})
        logger.log_metrics({"loss": 1.0}, step=1)
        FakeCheckpoint(tmp_path / "ckpt").save(logger, step=1, epoch=0, score=1.0)
        logger.log_summary({"stop_reason": "max_steps"})
        logger.finalize("success")
        assert logger.run_id is None and logger.state_dict()["run_id"] is None

    drive(WandbLogger(project="p", mode="disabled", save_dir=tmp_path / "disabled", log_model="all"))
    monkeypatch.setenv("RANK", "1")
    drive(WandbLogger(project="p", mode="offline", save_dir=tmp_path / "rank1", log_model="all"))
    assert not (tmp_path / "disabled").exists() and not (tmp_path / "rank1").exists()


# -- robustness -------------------------------------------------------------------------------
def test_failing_online_init_falls_back_to_offline_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real failure: a fake key and an unreachable server, with a short init timeout.
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    settings = wandb.Settings(base_url="http://127.0.0.1:9", init_timeout=3)
    logger = WandbLogger(project="p", mode="online", save_dir=tmp_path, settings=settings)
    planned_id = logger.run_id
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.log_hyperparams({"lr": 0.1})
        logger.log_metrics({"loss": 1.0}, step=1)
        logger.log_metrics({"loss": 0.5}, step=2)
        logger.log_summary({"stop_reason": "max_steps"})
        logger.finalize("success")
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert "online" in messages[0] and "offline" in messages[0] and "wandb sync" in messages[0]
    assert FAKE_KEY not in messages[0]
    assert logger.run_mode == "offline" and logger.run_id
    run = load_run(tmp_path)
    assert run.run_id == logger.run_id == planned_id  # the offline run keeps the id: sync resumes it
    assert run.column("loss") == {1: 1.0, 2: 0.5}
    assert run.config == {"lr": 0.1} and run.summary["stop_reason"] == "max_steps"


def test_init_failing_in_every_mode_disables_logging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_init(**kwargs: Any) -> None:
        raise wandb.errors.CommError(f"server error 500 for key {FAKE_KEY}")

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setattr(wandb, "init", broken_init)
    logger = WandbLogger(project="p", mode="online", save_dir=tmp_path, log_model="all")
    with pytest.warns(RuntimeWarning) as record:
        logger.log_metrics({"loss": 1.0}, step=1)
        logger.log_metrics({"loss": 0.5}, step=2)
        FakeCheckpoint(tmp_path / "ckpt").save(logger, step=2, epoch=0, score=1.0)
        logger.finalize("failed")
    assert len(record) == 1
    message = str(record[0].message)
    assert "online: CommError" in message and "offline: CommError" in message and "without W&B" in message
    assert FAKE_KEY not in message
    assert logger.run_id is None and not (tmp_path / "wandb").exists()


def test_errors_while_logging_warn_once_and_never_raise(tmp_path: Path) -> None:
    logger = WandbLogger(project="p", mode="offline", save_dir=tmp_path)
    logger.log_metrics({"loss": 1.0}, step=1)
    run = logger.experiment

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("service died")

    with pytest.MonkeyPatch.context() as mp, pytest.warns(RuntimeWarning) as record:
        mp.setattr(run, "log", broken)
        mp.setattr(run, "finish", broken)
        logger.log_metrics({"loss": 0.5}, step=2)
        logger.log_metrics({"loss": 0.25}, step=3)
        logger.finalize("success")
    assert [str(r.message) for r in record] == [
        "W&B log failed (RuntimeError: service died); training continues.",
        "W&B finish failed (RuntimeError: service died); training continues.",
    ]
    run.finish()  # the real run, whose finish was broken


def test_load_state_dict_after_the_run_started_warns(tmp_path: Path) -> None:
    logger = WandbLogger(project="p", mode="offline", save_dir=tmp_path)
    logger.log_metrics({"loss": 1.0}, step=1)
    with pytest.warns(RuntimeWarning, match="before the first log call"):
        logger.load_state_dict({"run_id": "elsewhere"})
    assert logger.run_id != "elsewhere"
    logger.finalize("success")


# -- driven by the real Trainer ----------------------------------------------------------------
class SpyWandbLogger(WandbLogger):
    """A WandbLogger that also keeps what the trainer asked it to log."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: Any, step: int) -> None:
        self.sent.append((step, {k: float(v) for k, v in metrics.items()}))
        super().log_metrics(metrics, step)


def test_trainer_fit_records_history_config_summary_and_best_checkpoint(tmp_path: Path) -> None:
    logger = SpyWandbLogger(project="p", mode="offline", save_dir=tmp_path, log_model="best")
    ckpt = ModelCheckpoint(monitor="val_loss", mode="min", save_top_k=1)
    trainer = make_trainer(tmp_path / "run", max_epochs=3, log_every_n_steps=2, callbacks=[ckpt], logger=logger)
    module = Regressor(lr=0.05)
    module.save_hyperparameters({"lr": 0.05, "d": 4})
    trainer.fit(module, train_dataloaders=loader(regression_data()), val_dataloaders=loader(regression_data(8, seed=1)))

    run = only_run(tmp_path)
    assert run.exit_code == 0 and run.run_id == logger.run_id
    # Exactly what the trainer sent, row by row, at the trainer's global step.
    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in run.history]
    assert rows == [{**m, STEP_KEY: step} for step, m in logger.sent]
    assert set(run.column("train_loss")) == {2, 4, 6, 8, 10, 12, 14}  # every log_every_n_steps
    assert set(run.column("val_loss")) == {5, 10, 15}  # 5 batches per epoch
    assert run.column("val_loss")[15] == pytest.approx(trainer.callback_metrics["val_loss"])
    assert {k: run.config[k] for k in ("lr", "d")} == {"lr": 0.05, "d": 4}  # flat, as Lightning's
    assert run.summary["stop_reason"] == "max_epochs" and run.summary["global_step"] == 15
    assert run.summary["best_model_score"] == pytest.approx(ckpt.best_model_score)
    (art,) = run.artifacts
    assert sorted(art["aliases"]) == ["best", "latest"] and art["name"] == f"model-{logger.run_id}"
    assert art["metadata"]["original_filename"] == Path(ckpt.best_model_path).name
    assert art["metadata"]["score"] == pytest.approx(ckpt.best_model_score)
    epoch, step = art["metadata"]["epoch"], art["metadata"]["step"]
    assert Path(ckpt.best_model_path).name.startswith(f"epoch={epoch}-step={step}")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["wandb_run_id"] == logger.run_id


class FailsAtFirstStep(Regressor):
    def on_train_start(self) -> None:
        self.run_at_start = self.trainer.logger.run_mode  # the run has started before any step

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        raise RuntimeError("bug in step 1")


def test_the_run_starts_with_the_fit_and_records_a_failure_in_the_first_step(tmp_path: Path) -> None:
    logger = WandbLogger(project="p", mode="offline", save_dir=tmp_path)
    trainer = make_trainer(tmp_path / "run", max_epochs=1, log_every_n_steps=50, logger=logger)
    module = FailsAtFirstStep()
    module.save_hyperparameters({"lr": 0.1})
    with pytest.raises(RuntimeError, match="bug in step 1"):
        trainer.fit(module, train_dataloaders=loader(regression_data()))
    assert module.run_at_start == "offline"
    run = only_run(tmp_path)
    assert run.run_id == logger.run_id and run.exit_code != 0  # recorded as failed, with its config
    assert run.config["lr"] == 0.1  # a plain Trainer logs Lightning's flat hparams


class LogsConfigAtSetup(Callback):
    """Lightning's SaveConfigCallback pattern: hyperparameters logged in setup(), before the restore."""

    def setup(self, trainer: Any, module: Any, stage: str) -> None:
        trainer.logger.log_hyperparams({"cli": {"seed": 1}})


def test_a_resumed_fit_reattaches_even_when_setup_logs_hyperparameters(tmp_path: Path) -> None:
    first = WandbLogger(project="p", mode="offline", save_dir=tmp_path)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    done = make_trainer(tmp_path / "run", max_epochs=1, logger=first, callbacks=[ckpt])
    done.fit(Regressor(), train_dataloaders=loader(regression_data()))
    second = WandbLogger(project="p", mode="offline", save_dir=tmp_path)
    trainer = make_trainer(tmp_path / "run", max_epochs=2, logger=second, callbacks=[LogsConfigAtSetup()])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "cannot reattach"
        trainer.fit(Regressor(), train_dataloaders=loader(regression_data()), ckpt_path=ckpt.last_model_path)
    assert second.run_id == first.run_id and trainer.global_step == 2 * done.global_step  # resumed


TESTS = Path(__file__).resolve().parent
JOB_ARGS = [
    "run_name=r",
    "trainer.progress_bar=false",
    "wandb.mode=offline",
    "checkpoint.monitor=val_loss",
    "checkpoint.every_n_train_steps=3",
    "trainer.val_check_interval=5",
]


def job(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> Any:
    """tests/jobs/resume_job.py in `cwd` (its wandb/ folder lands there); returns the process."""
    cmd = [sys.executable, "-m", "jobs.resume_job", f"output_dir={cwd / 'out'}", *JOB_ARGS, *args]
    # WANDB_SERVICE: this process's wandb-core; a child must start its own, as a real job does.
    full_env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    full_env.update(PYTHONPATH=str(TESTS), **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"job failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_killed_and_resumed_job_appends_to_the_same_run(tmp_path: Path) -> None:
    # SLOW makes the first part outlive wandb's 2 s file flush before the SIGKILL.
    killed = job(tmp_path, "trainer.max_epochs=3", env={"KILL_AT_STEP": "25", "SLOW": "0.15"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    resumed = job(tmp_path, "trainer.max_epochs=3", "resume=last", "wandb.log_model=true")

    first, second = load_runs(tmp_path, finished=False)
    run_id = json.loads((tmp_path / "out" / "r" / "summary.json").read_text())["wandb_run_id"]
    assert first.run_id == second.run_id == run_id
    assert first.exit_code is None and second.exit_code == 0  # the first part never finished
    assert 10 in first.column("train_loss_step")  # flushed before the kill
    ckpt = torch.load(tmp_path / "out" / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["logger"]["run_id"] == run_id  # every checkpoint carries the run id
    # The resumed part starts after the checkpoint it resumed from (step 24) and runs to the end.
    assert min(s for s in second.column("train_loss_step")) == 30
    assert max(r["trainer/global_step"] for r in second.history) == 33
    assert second.summary["stop_reason"] == "max_epochs" and second.summary["resumed_from"].endswith(".ckpt")
    assert {tuple(sorted(a["aliases"])) for a in second.artifacts} == {("best", "latest"), ("latest",)}
    assert f"wandb sync wandb/{first.path.parent.name} wandb/{second.path.parent.name}" in resumed.stdout


def test_a_new_run_from_another_runs_checkpoint_is_a_new_wandb_run(tmp_path: Path) -> None:
    # wandb.name is the same for both: the run folder, not the W&B name, says which run this is.
    job(tmp_path, "trainer.max_epochs=1", "wandb.name=exp")
    parent_ckpt = tmp_path / "out" / "r" / "checkpoints" / "last.ckpt"
    job(tmp_path, "trainer.max_epochs=2", "wandb.name=exp", "run_name=b", f"resume={parent_ckpt}")
    first, second = load_runs(tmp_path)
    assert second.run_id != first.run_id and not second.resumed
    assert second.config["parent"] == {"run_name": "r", "wandb_run_id": first.run_id, "checkpoint": str(parent_ckpt)}
    assert first.exit_code == second.exit_code == 0 and "parent" not in first.config
    assert min(second.column("train_loss_step")) > 10  # b goes on from r's step, in its own run
    b = json.loads((tmp_path / "out" / "b" / "summary.json").read_text())
    assert b["wandb_run_id"] == second.run_id and b["resumed_from"] == str(parent_ckpt)
    assert (
        torch.load(tmp_path / "out" / "b" / "checkpoints" / "last.ckpt", weights_only=True)["logger"]["run_id"]
        == second.run_id
    )
    # resume=last of the same run (its own folder) continues its W&B run.
    job(tmp_path, "trainer.max_epochs=3", "wandb.name=exp", "run_name=b", "resume=last")
    runs = load_runs(tmp_path)
    assert [r.run_id for r in runs] == [first.run_id, second.run_id, second.run_id]
    assert json.loads((tmp_path / "out" / "b" / "summary.json").read_text())["wandb_run_id"] == second.run_id


def test_a_trainer_with_another_wandb_name_starts_a_new_run_from_a_checkpoint(tmp_path: Path) -> None:
    ckpt = ModelCheckpoint(dirpath=tmp_path / "a" / "ckpt", save_last=True)
    first = WandbLogger(project="p", name="a", mode="offline", save_dir=tmp_path)
    make_trainer(tmp_path / "a", max_epochs=1, logger=first, callbacks=[ckpt]).fit(
        Regressor(), train_dataloaders=loader(regression_data())
    )
    second = WandbLogger(project="p", name="b", mode="offline", save_dir=tmp_path)
    trainer = make_trainer(tmp_path / "b", max_epochs=2, logger=second)
    trainer.fit(Regressor(), train_dataloaders=loader(regression_data()), ckpt_path=ckpt.last_model_path)
    a, b = load_runs(tmp_path)
    assert a.run_id == first.run_id != b.run_id == second.run_id
    assert b.config["parent"] == {"run_name": "a", "wandb_run_id": a.run_id, "checkpoint": ckpt.last_model_path}
    assert trainer.global_step == 10  # the weights and the loop position came from a's checkpoint


def test_a_failed_start_records_no_wandb_run_and_leaves_no_run_folder(tmp_path: Path) -> None:
    missing = job(tmp_path, "trainer.max_epochs=1", f"resume={tmp_path / 'nope.ckpt'}", check=False)
    assert missing.returncode != 0 and "nope.ckpt does not exist" in missing.stderr
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "out" / "r").exists()
    job(tmp_path, "trainer.max_epochs=1")
    parent = tmp_path / "out" / "r" / "checkpoints" / "last.ckpt"
    (recorded,) = offline_run_dirs(tmp_path)
    shapes = job(tmp_path, "run_name=s", "model.hidden=8", f"resume={parent}", check=False)
    assert shapes.returncode != 0 and "does not fit the model" in shapes.stderr
    typo = job(tmp_path, "run_name=t", "checkpoint.monitor=val_los", check=False)  # found at the sanity check
    assert typo.returncode != 0 and "did you mean checkpoint.monitor=val_loss" in typo.stderr
    summary = (tmp_path / "out" / "r" / "summary.json").read_text()
    resumed = job(tmp_path, "resume=last", "model.hidden=8", check=False)  # the run's own checkpoint, wrong shapes
    assert resumed.returncode != 0 and "does not fit the model" in resumed.stderr
    assert (tmp_path / "out" / "r" / "summary.json").read_text() == summary  # the run's record stands
    assert offline_run_dirs(tmp_path) == [recorded]  # nothing `wandb sync` would upload
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r"]
    assert load_run(recorded).exit_code == 0


def test_ddp_job_records_exactly_one_run(tmp_path: Path) -> None:
    job(tmp_path, "trainer.max_epochs=1", "trainer.devices=2", "trainer.accelerator=cpu")
    (run,) = load_runs(tmp_path)
    summary = json.loads((tmp_path / "out" / "r" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["wandb_run_id"] == run.run_id
    assert run.exit_code == 0 and run.config["config"]["trainer"]["devices"] == 2
    assert set(run.column("val_loss")) == {5, 6}  # 6 steps of 2 x 8 samples: val at 5 and the epoch end
    assert len(list((tmp_path / "wandb").glob("*run-*"))) == 1  # no second run, online or offline


# -- Lightning's WandbLogger surface -----------------------------------------------------------
def table_file(run: RunRecords, key: str) -> dict[str, Any]:
    """The JSON of a logged table (columns, data), from the run's files."""
    (row,) = [r for r in run.history if f"{key}/path" in r]
    return json.loads((run.path.parent / "files" / row[f"{key}/path"]).read_text())


def test_lightning_arguments_and_media_methods_are_recorded(tmp_path: Path) -> None:
    import argparse

    import numpy as np

    logger = WandbLogger(
        name="n",
        project="p",
        save_dir=tmp_path,
        offline=True,
        id="abc12345",
        job_type="eval",
        group="g",
        tags=["t"],
        prefix="train",
        notes="forwarded to wandb.init",
    )
    assert logger._run is None  # started lazily, by the first access to `experiment`
    assert logger.experiment.id == "abc12345" and logger.run_mode == "offline"
    model = torch.nn.Linear(3, 2)
    logger.watch(model, log_freq=1)  # Lightning's default: gradients
    logger.watch(model)  # already watched: not hooked twice
    logger.log_image("samples", [np.zeros((8, 8)), np.ones((8, 8))], caption=["zeros", "ones"], step=3)
    logger.log_table("tbl", columns=["a", "b"], data=[[1, "x"], [2, "y"]], step=4)
    logger.log_text("txt", columns=["text"], data=[["hello"]])  # no step: the last one
    logger.log_hyperparams(argparse.Namespace(lr=0.1))
    model(torch.randn(4, 3)).sum().backward()
    logger.log_metrics({"loss": 1.0}, step=5)
    with contextlib.redirect_stdout(io.StringIO()):
        logger.finalize("success")

    run = only_run(tmp_path)
    assert (run.run_id, run.name, run.project, run.job_type, run.group) == ("abc12345", "n", "p", "eval", "g")
    assert run.tags == ["t"] and run.notes == "forwarded to wandb.init" and run.config == {"lr": 0.1}
    images = next(r for r in run.history if "train-samples/captions" in r)
    assert images["train-samples/captions"] == ["zeros", "ones"] and images[STEP_KEY] == 3
    assert images["train-samples/count"] == 2 and images["train-samples/width"] == 8
    assert table_file(run, "train-tbl") == {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}
    assert table_file(run, "train-txt") == {"columns": ["text"], "data": [["hello"]]}
    assert run.column("train-txt/nrows") == {4: 1}
    last = run.history[-1]
    assert last["train-loss"] == 1 and last[STEP_KEY] == 5
    # wandb names the histograms gradients/<param> (graph_<n><param> after other watched models)
    assert any(k.startswith("gradients/") and k.endswith("weight/_type") for k in last)
    assert not any(k.startswith("parameters/") for r in run.history for k in r)  # gradients only


def test_experiment_argument_logs_into_a_run_the_caller_started(tmp_path: Path) -> None:
    run = wandb.init(mode="offline", dir=str(tmp_path), project="p", id="mine1234")
    logger = WandbLogger(experiment=run, checkpoint_name="weights")
    assert logger.experiment is run and logger.run_id == "mine1234"
    logger.log_metrics({"x": 2.0}, step=7)
    ckpt = FakeCheckpoint(tmp_path / "ckpts")
    logger.log_model = "all"
    ckpt.save(logger, step=7, epoch=0, score=0.5)
    with contextlib.redirect_stdout(io.StringIO()):
        logger.finalize("success")
    records = only_run(tmp_path)
    assert records.run_id == "mine1234" and records.column("x") == {7: 2}
    assert {a["name"] for a in records.artifacts} == {"weights"}


def test_watch_configured_at_construction_is_what_fit_applies(tmp_path: Path) -> None:
    # Without watch= the trainer hooks nothing; the user's own logger.watch(model) still works.
    logger = WandbLogger(project="p", mode="offline", save_dir=tmp_path)
    trainer = make_trainer(tmp_path / "run", max_epochs=1, log_every_n_steps=1, logger=logger)
    trainer.fit(Regressor(), train_dataloaders=loader(regression_data()))
    assert not any(k.startswith(("gradients/", "parameters/")) for r in only_run(tmp_path).history for k in r)


def test_digits_example_logs_a_table_of_validation_images_with_labels(
    template_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("digits")
    project = new_project(template_repo, base / "proj", "package_name=digits_tbl")
    args = [
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "trainer.progress_bar=false",
        "model.log_examples_every_n_epochs=2",
        "wandb.mode=offline",
        "run_name=r",
        f"output_dir={base / 'runs'}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env["PYTHONPATH"] = str(project / "src")
    proc = subprocess.run(
        [sys.executable, "-m", "digits_tbl.train", *args], cwd=project, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = only_run(project)
    (table_row,) = [r for r in run.history if "val_examples/path" in r]  # epoch 2 only (every 2nd)
    assert table_row[STEP_KEY] == 4  # 2 epochs of 2 batches: the validation after the last step
    table = table_file(run, "val_examples")
    assert table["columns"] == ["image", "label", "prediction"] and len(table["data"]) == 16
    from sklearn.datasets import load_digits
    from torch.utils.data import random_split

    labels = torch.tensor(load_digits().target)
    _, val = random_split(range(len(labels)), [len(labels) - 359, 359], generator=torch.Generator().manual_seed(0))
    assert [row[1] for row in table["data"]] == labels[list(val)[:16]].tolist()  # the true labels
    assert all(0 <= row[2] <= 9 for row in table["data"])
    # The images travel in the table's run_table artifact: 16 PNG files and the table itself.
    (artifact,) = [a for a in run.artifacts if a["type"] == "run_table"]
    assert artifact["name"] == f"run-{run.run_id}-val_examples"
    assert sum(f.endswith(".png") for f in artifact["files"]) == 16


def test_under_slurm_auto_mode_records_offline_at_once_even_with_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`wandb login` on a login node writes ~/.netrc, which compute nodes read: no online attempt there."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "http://10.255.255.1:9")  # unroutable: an online try waits init_timeout
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    logger = WandbLogger(project="p", save_dir=tmp_path / "project", init_timeout=60)
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.log_metrics({"loss": 1.0}, step=1)
    took = time.monotonic() - started
    assert logger.run_mode == "offline" and took < 30, took
    assert not [w for w in caught if "W&B" in str(w.message)]  # no failed online start to warn about
    logger.finalize("success")
    assert len(offline_run_dirs(tmp_path / "project")) == 1
    assert WandbLogger(project="p", save_dir=tmp_path, mode="online")._resolve_mode(wandb) == "online"  # asked for
