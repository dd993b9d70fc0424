"""Config: YAML + dotted overrides, type coercion, validation that reports every problem."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from engine_fixtures import RegressionData, Regressor

from engine import ConfigError, DataConfig, load_config, run
from engine.config import dump_yaml, to_dict


@dataclass
class ModelConfig:
    hidden: int = 64
    lr: float = 3e-3
    act: str = "relu"


@dataclass
class MyDataConfig(DataConfig):
    val_fraction: float = 0.2


def _load(argv: list[str], **kwargs):
    kwargs.setdefault("path", False)  # no file unless a test gives one
    return load_config(argv, model=ModelConfig, data=MyDataConfig, exit_on_error=False, **kwargs)


def _problems(argv: list[str], **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        _load(argv, **kwargs)
    return str(info.value)


def test_yaml_then_overrides_in_both_styles(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "trainer:\n  max_epochs: 3\n  precision: 32\n  log_every_n_steps: 7\n"
        "model:\n  hidden: 16\n"
        "data:\n  batch_size: 8\n"
    )
    cfg = _load(["--config", str(path), "trainer.max_epochs=5", "--trainer.precision=bf16-mixed", "--model.lr", "1e-2"])
    assert cfg.trainer.max_epochs == 5  # the override beats the file
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.log_every_n_steps == 7  # from the file
    assert cfg.model == ModelConfig(hidden=16, lr=0.01, act="relu")
    assert cfg.data == MyDataConfig(batch_size=8, num_workers=0, val_fraction=0.2)


def test_default_yaml_in_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("trainer:\n  max_epochs: 2\nrun_name: demo\n")
    monkeypatch.chdir(tmp_path)
    cfg = _load([], path=None)
    assert (cfg.trainer.max_epochs, cfg.run_name, cfg.output_dir, cfg.resume) == (2, "demo", "runs", None)


def test_values_are_coerced_to_the_declared_types() -> None:
    cfg = _load(
        [
            "trainer.precision=32",  # YAML int -> the string "32"
            "model.lr=1",  # int -> float
            "trainer.gradient_clip_val=1",
            "trainer.limit_train_batches=3",  # an int stays a batch count
            "trainer.limit_val_batches=0.5",  # a float is a fraction
            "trainer.deterministic=true",
            "trainer.fast_dev_run=2",
            "trainer.max_epochs=null",
            "trainer.max_steps=100",
            "wandb.tags=[a, b]",
            "checkpoint.monitor=val_acc",
        ]
    )
    t = cfg.trainer
    assert t.precision == "32" and isinstance(t.precision, str)
    assert cfg.model.lr == 1.0 and isinstance(cfg.model.lr, float)
    assert t.gradient_clip_val == 1.0 and isinstance(t.gradient_clip_val, float)
    assert t.limit_train_batches == 3 and type(t.limit_train_batches) is int
    assert t.limit_val_batches == 0.5 and type(t.limit_val_batches) is float
    assert t.deterministic is True
    assert t.fast_dev_run == 2 and type(t.fast_dev_run) is int
    assert t.max_epochs is None and t.max_steps == 100
    assert cfg.wandb.tags == ["a", "b"]
    assert cfg.checkpoint.monitor == "val_acc"


def test_research_dataclasses_type_their_sections() -> None:
    cfg = _load(["model.hidden=8", "data.val_fraction=0.3"])
    assert isinstance(cfg.model, ModelConfig) and cfg.model.hidden == 8
    assert isinstance(cfg.data, MyDataConfig) and cfg.data.val_fraction == 0.3 and cfg.data.batch_size == 32
    defaults = _load([])
    assert defaults.model == ModelConfig() and defaults.data == MyDataConfig()


def test_unknown_key_names_the_closest_valid_key() -> None:
    message = _problems(["trainer.max_epoch=3"])
    assert "unknown key 'trainer.max_epoch'" in message
    assert "did you mean 'trainer.max_epochs'?" in message
    assert "did you mean 'model.hidden'?" in _problems(["model.hiden=3"])
    assert "did you mean 'early_stopping'?" in _problems(["early_stoping.patience=3"])


def test_wrong_type_names_the_key() -> None:
    message = _problems(["trainer.max_epochs=ten"])
    assert "trainer.max_epochs: expected int or null, got 'ten'" in message
    assert "data.batch_size: expected int, got 1.5" in _problems(["data.batch_size=1.5"])
    assert "trainer.sync_batchnorm: expected bool, got 1" in _problems(["trainer.sync_batchnorm=1"])
    assert "trainer.deterministic: 1 is not one of False, True, 'warn'" in _problems(["trainer.deterministic=1"])
    message = _problems(["trainer.precision=fp16"])
    assert "trainer.precision: 'fp16' is not one of '32', '16-mixed', 'bf16-mixed', 'bf16-true'" in message


def test_all_problems_are_reported_at_once() -> None:
    message = _problems(
        ["trainer.max_epoch=3", "trainer.precision=fp16", "data.batch_size=abc", "model.hiddn=3", "oops"]
    )
    lines = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(lines) == 5, message
    for part in ("trainer.max_epoch", "trainer.precision", "data.batch_size", "model.hiddn", "'oops' is not KEY=VALUE"):
        assert part in message


def test_cross_field_checks() -> None:
    message = _problems(
        ["trainer.limit_train_batches=1.5", "trainer.gradient_clip_val=0", "trainer.accumulate_grad_batches=0"]
    )
    assert "trainer.limit_train_batches: a float is a fraction in [0, 1], got 1.5; use an int for a count" in message
    assert "trainer.gradient_clip_val must be > 0" in message
    assert "trainer.accumulate_grad_batches must be >= 1, got 0" in message
    assert "set trainer.max_steps" in _problems(["trainer.max_epochs=null"])


def test_missing_config_file_and_bad_yaml(tmp_path: Path) -> None:
    assert f"config file {tmp_path / 'nope.yaml'} does not exist" in _problems(
        ["--config", str(tmp_path / "nope.yaml")]
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [1, 2\n")
    assert f"{bad}: line 2: not valid YAML" in _problems([f"--config={bad}"])


def test_exit_on_error_prints_every_problem_to_stderr_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load_config(["trainer.max_epoch=3", "data.batch_size=x"], model=ModelConfig, path=False)
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "did you mean 'trainer.max_epochs'?" in lines[0] and "data.batch_size: expected int" in lines[1]


def test_dumped_yaml_loads_back_to_the_same_config(tmp_path: Path) -> None:
    cfg = _load(["trainer.max_epochs=4", "model.hidden=12", "wandb.tags=[x]", "trainer.limit_val_batches=0.25"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    again = _load([], path=path)
    assert to_dict(again) == to_dict(cfg)


def test_run_saves_the_resolved_config_in_the_run_folder_and_checkpoints(tmp_path: Path) -> None:
    argv = [
        f"output_dir={tmp_path}",
        "run_name=r",
        "trainer.max_epochs=2",
        "wandb.mode=disabled",
        "trainer.progress_bar=false",
        "checkpoint.monitor=val_loss",
        "early_stopping.monitor=val_loss",
        "model.hidden=5",
    ]
    cfg = _load(argv)
    assert run(cfg, Regressor(), RegressionData()) == 0
    folder = tmp_path / "r"
    assert (folder / "config.yaml").read_text() == dump_yaml(cfg)
    last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["config"] == to_dict(cfg) and last["config"]["model"]["hidden"] == 5
    summary = json.loads((folder / "summary.json").read_text())
    assert {
        "global_step",
        "epoch",
        "stop_reason",
        "best_model_path",
        "best_model_score",
        "metrics",
        "wandb_run_id",
        "world_size",
    } <= set(summary)
    assert (summary["global_step"], summary["epoch"], summary["stop_reason"], summary["world_size"]) == (
        8,
        2,
        "max_epochs",
        1,
    )
    assert summary["best_model_path"].startswith(str(folder / "checkpoints" / "epoch="))


# -- the project root, the config file's place and its line numbers -----------------------------
def _vendored_engine(tmp_path: Path, layout: str) -> object:
    """This repository's engine loaded as ``<package>.engine`` of a project at tmp_path/proj."""
    import importlib.util
    import sys
    import uuid

    ROOT = Path(__file__).resolve().parents[1]

    project = tmp_path / "proj"
    package = f"pkg_{uuid.uuid4().hex[:8]}"
    folder = project / "src" / package if layout == "src" else project / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    parent = importlib.util.spec_from_file_location(package, folder / "__init__.py")
    assert parent and parent.loader
    sys.modules[package] = importlib.util.module_from_spec(parent)
    spec = importlib.util.spec_from_file_location(
        f"{package}.engine", ROOT / "engine" / "__init__.py", submodule_search_locations=[str(ROOT / "engine")]
    )
    assert spec and spec.loader
    engine_module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = engine_module
    spec.loader.exec_module(engine_module)
    return engine_module


@pytest.mark.parametrize("layout", ["src", "flat"])
def test_the_vendored_engine_finds_its_project_root_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    vendored = _vendored_engine(tmp_path, layout)
    project = tmp_path / "proj"
    (project / "configs").mkdir()
    (project / "configs" / "default.yaml").write_text("data:\n  batch_size: 7\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert vendored.config.project_root() == project.resolve()
    cfg = vendored.load_config([], exit_on_error=False)
    assert cfg.data.batch_size == 7  # the project's file, not the dataclass default (32)
    assert cfg.project_root == project.resolve()


def test_a_missing_config_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    message = _problems([], path=None, root=tmp_path)
    assert f"config file {tmp_path / 'configs' / 'default.yaml'} does not exist" in message
    (tmp_path / "configs" / "default.yaml").mkdir(parents=True)  # a folder: not readable as a file
    assert "is not a file" in _problems([], path=None, root=tmp_path)


def test_problems_in_the_file_name_its_line_and_overrides_do_not(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text(
        "# comment\ntrainer:\n  max_epoch: 3\n  precision: fp16\nmodel:\n  hidden: wide\n"
    )
    message = _problems(["model.hidden=wider"], path=None, root=tmp_path)
    assert (
        "configs/default.yaml: line 3: unknown key 'trainer.max_epoch'; did you mean 'trainer.max_epochs'?" in message
    )
    assert "configs/default.yaml: line 4: trainer.precision: 'fp16' is not one of" in message
    assert "  - model.hidden: expected int, got 'wider'" in message  # from the command line: no file line
    (tmp_path / "configs" / "default.yaml").write_text("trainer:\n  max_epochs: 0\n")
    assert "configs/default.yaml: line 2: trainer.max_epochs must be >= 1" in _problems([], path=None, root=tmp_path)


def test_relative_paths_resolve_against_the_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    (project / "configs").mkdir(parents=True)
    (project / "configs" / "default.yaml").write_text("run_name: r\n")
    (project / "configs" / "other.yaml").write_text("run_name: other\n")
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = _load(["--config", "configs/other.yaml", *QUICK], path=None, root=project)
    assert cfg.run_name == "other"
    assert run(cfg, Regressor(), RegressionData()) == 0
    assert (project / "runs" / "other" / "summary.json").is_file()
    assert not (elsewhere / "runs").exists()


QUICK = ["trainer.max_epochs=1", "wandb.mode=disabled", "trainer.progress_bar=false"]


def test_help_lists_every_key_with_its_value_and_comment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("model:\n  hidden: 16   # width of the hidden layer\n")
    with pytest.raises(SystemExit) as info:
        _load(["--help"], path=None, root=tmp_path)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ")
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert "hidden: 16 [configs/default.yaml:2] # width of the hidden layer" in lines  # the file's value and comment
    assert "max_steps: -1 [default] # -1: no step limit" in lines  # the dataclass's default and comment
    for section in ("trainer:", "checkpoint:", "early_stopping:", "wandb:", "data:", "model:"):
        assert any(line.startswith(section) for line in lines), section


def test_resume_last_needs_a_run_name_and_zero_train_batches_is_refused() -> None:
    assert "resume=last continues a named run: pass its name, e.g. run_name=exp1 resume=last" in _problems(
        ["resume=last"]
    )
    assert _load(["resume=last", "run_name=a"]).resume == "last"
    assert "trainer.limit_train_batches=0 trains nothing" in _problems(["trainer.limit_train_batches=0"])
    assert "trainer.limit_train_batches=0 trains nothing" in _problems(["trainer.limit_train_batches=0.0"])


def test_run_main_turns_expected_failures_into_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import run_main

    def start(*args: str) -> int:
        cfg = _load([f"output_dir={tmp_path}", "run_name=r", *QUICK, *args])
        return run(cfg, Regressor(), RegressionData())

    monkeypatch.delenv("SCAFFOLD_DEBUG", raising=False)
    assert run_main(lambda: start(f"resume={tmp_path / 'nope.ckpt'}")) == 1
    assert run_main(lambda: start("trainer.precision=16-mixed", "trainer.accelerator=cpu")) == 2
    assert run_main(lambda: start("trainer.limit_train_batches=0.01")) == 2  # 0 of 4 batches
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err] == ["error", "error", "error"], err
    assert "nope.ckpt does not exist" in err[0]
    assert "use trainer.precision=bf16-mixed" in err[1]
    assert "no training batches" in err[2]
    assert not (tmp_path / "r").exists()  # no failed start leaves a run folder
    monkeypatch.setenv("SCAFFOLD_DEBUG", "1")
    with pytest.raises(ConfigError):
        run_main(lambda: start("trainer.precision=16-mixed", "trainer.accelerator=cpu"))


def test_values_expand_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`output_dir: $SCRATCH/runs` on a cluster: in the file and on the command line (quoted, as sbatch passes it)."""
    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("EPOCHS", "7")
    monkeypatch.setenv("ACT", "gelu")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    file = tmp_path / "c.yaml"
    file.write_text("output_dir: $SCRATCH/runs\ntrainer:\n  max_epochs: ${EPOCHS}\nwandb:\n  tags: [a, $ACT]\n")
    cfg = _load([], path=file)
    assert cfg.output_dir == f"{tmp_path}/scratch/runs"
    assert cfg.trainer.max_epochs == 7  # one reference alone: read as YAML, so a number
    assert cfg.wandb.tags == ["a", "gelu"]
    cfg = _load(["output_dir=${SCRATCH}/x", "model.act=$ACT-$$5"], path=file)
    assert cfg.output_dir == f"{tmp_path}/scratch/x" and cfg.model.act == "gelu-$5"
    text = _problems(["run_name=$NOT_SET_ANYWHERE"], path=file)
    assert "run_name: $NOT_SET_ANYWHERE is not set (export NOT_SET_ANYWHERE=..., or write the value)" in text
    assert text.count("\n") == 1  # one problem, one line
    file.write_text("output_dir: ${NOT_SET_ANYWHERE}/runs\n")
    assert "c.yaml: line 1: output_dir: $NOT_SET_ANYWHERE is not set" in _problems([], path=file)


def test_config_files_layer_on_default_yaml_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text(
        "trainer:\n  max_epochs: 7\n  precision: bf16-mixed\n"
        "checkpoint:\n  monitor: val_acc\n  mode: max\n"
        "wandb:\n  project: lab\n  entity: team\n"
        "data:\n  batch_size: 128\nmodel:\n  hidden: 16\n"
    )
    (tmp_path / "configs" / "small.yaml").write_text("trainer:\n  max_epochs: 2\nmodel:\n  hidden: 8\n  lr: 0.1\n")
    (tmp_path / "configs" / "tiny.yaml").write_text("model:\n  hidden: 4\n")
    monkeypatch.chdir(tmp_path / "configs")  # --config relative to the working directory, else the project
    cfg = _load(["--config", "configs/small.yaml", "--config=tiny.yaml", "model.lr=0.2"], path=None, root=tmp_path)
    assert cfg.trainer.max_epochs == 2 and cfg.trainer.precision == "bf16-mixed"  # one key changed, one kept
    assert (cfg.checkpoint.monitor, cfg.checkpoint.mode) == ("val_acc", "max")
    assert (cfg.wandb.project, cfg.wandb.entity, cfg.data.batch_size) == ("lab", "team", 128)
    assert cfg.model == ModelConfig(hidden=4, lr=0.2, act="relu")  # later files win, the command line last
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "config: configs/default.yaml, then configs/small.yaml, then configs/tiny.yaml "
        "(later files win; KEY=VALUE wins over all)"
    ]
    # A problem names the file that set the key; --help says where every value came from.
    (tmp_path / "configs" / "tiny.yaml").write_text("model:\n  hidden: 4\n  width: 3\n")
    assert "configs/tiny.yaml: line 3: unknown key 'model.width'" in _problems(
        ["--config", "configs/tiny.yaml"], path=None, root=tmp_path
    )
    with pytest.raises(SystemExit):
        _load(["--config", "configs/small.yaml", "model.lr=0.2", "--help"], path=None, root=tmp_path)
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert "max_epochs: 2 [configs/small.yaml:2]" in lines
    assert "precision: bf16-mixed [configs/default.yaml:3]" in lines
    assert "lr: 0.2 [command line]" in lines
    assert "act: relu [default]" in lines


def test_a_config_file_without_default_yaml_and_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "only.yaml").write_text("run_name: x\n")
    cfg = _load(["--config", str(tmp_path / "only.yaml")], path=None, root=tmp_path)  # no configs/default.yaml
    assert cfg.run_name == "x" and cfg.trainer.max_epochs == 10
    assert "config file" in _problems(["--config", str(tmp_path / "nope.yaml")], path=None, root=tmp_path)


def test_unknown_key_suggests_the_same_name_in_another_section() -> None:
    assert "unknown key 'lr'; did you mean 'model.lr'?" in _problems(["lr=0.1"])
    assert "unknown key 'max_epochs'; did you mean 'trainer.max_epochs'?" in _problems(["max_epochs=3"])
    assert "unknown key 'trainer.batch_size'; did you mean 'data.batch_size'?" in _problems(["trainer.batch_size=3"])
    assert "unknown key 'model.hiden'; did you mean 'model.hidden'?" in _problems(["model.hiden=3"])


def test_trainer_profiler_is_a_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _load([f"output_dir={tmp_path}", "run_name=p", "trainer.profiler=simple", *QUICK])
    assert run(cfg, Regressor(), RegressionData()) == 0
    out = capsys.readouterr().out
    assert "FIT Profiler Report" in out and "[phase] optimizer" in out
    assert "trainer.profiler: 'advanced' is not one of 'simple', 'pytorch' or null" in _problems(
        ["trainer.profiler=advanced"]
    )
    assert _load([]).trainer.profiler is None


def test_the_files_line_is_printed_once_per_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "c.yaml").write_text("run_name: x\n")
    for env in ({"RANK": "1"}, {"SLURM_PROCID": "2"}, {"SCAFFOLD_SELF_LAUNCHED": "1", "RANK": "0"}):
        with monkeypatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            _load(["--config", str(tmp_path / "c.yaml")])
    assert capsys.readouterr().out == ""
    _load(["--config", str(tmp_path / "c.yaml")])
    assert capsys.readouterr().out == f"config: {tmp_path / 'c.yaml'}\n"
