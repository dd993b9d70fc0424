"""The W&B sweep spec as the offline runner reads it: checks, distributions, grid, Optuna, hyperband."""

from __future__ import annotations

import math
import random

import pytest

from engine.config import ConfigError
from engine.sweep import SweepState, _yaml_value, hyperband_verdict, propose
from engine.sweep_spec import parse_spec


def spec(**raw):
    raw.setdefault("method", "random")
    raw.setdefault("metric", {"name": "val_acc", "goal": "maximize"})
    return parse_spec(raw, "configs/sweep.yaml", "sweep")


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"controller": {"type": "local"}}, "unsupported key 'controller'"),
        ({"method": "custom"}, "unsupported method 'custom'"),
        ({"parameters": {"model.lr": {"distribution": "uniform", "min": 0, "max": 1, "step": 2}}}, "model.lr.step"),
        ({"parameters": {"model.lr": {"distribution": "zipf", "min": 0, "max": 1}}}, "unsupported distribution 'zipf'"),
        ({"early_terminate": {"type": "envelope"}}, "unsupported type 'envelope'"),
        ({"early_terminate": {"type": "hyperband", "min_iter": 1, "smax": 3}}, "early_terminate.smax"),
        ({"metric": {"name": "x", "summary": "max"}}, "metric.summary"),
        ({"parameters": {"model": {"parameters": {"lr": {"value": 1}}, "extra": 1}}}, "model.extra"),
        ({"parameters": {"model.lr": {"min": 1.0, "max": 0.1}}}, "min 1.0 is above max 0.1"),
        ({"parameters": {"model.lr": {"distribution": "log_uniform_values", "min": 0, "max": 1}}}, "needs min > 0"),
        ({"run_cap": 0}, "run_cap must be an integer >= 1"),
    ],
)
def test_unsupported_or_wrong_keys_are_one_line_errors_naming_them(raw: dict, named: str) -> None:
    raw.setdefault("parameters", {"model.lr": {"values": [1]}})
    with pytest.raises(ConfigError) as err:
        spec(**raw)
    message = str(err.value)
    assert named in message and "\n" not in message
    assert message.startswith("configs/sweep.yaml: ")


def test_nested_parameters_and_w_and_b_inference_rules() -> None:
    s = spec(
        parameters={
            "model": {"parameters": {"lr": {"min": 0.001, "max": 0.1}, "hidden": {"min": 16, "max": 64}}},
            "data.batch_size": {"values": [32, 64]},
            "trainer.max_epochs": {"value": 3},
            "model.noise": {"mu": 0.0, "sigma": 0.1},
        },
        project="p",
        program="train.py",
        command=["${env}"],
    )
    got = {p.key: p.distribution for p in s.params}
    assert got == {
        "model.lr": "uniform",
        "model.hidden": "int_uniform",
        "data.batch_size": "categorical",
        "trainer.max_epochs": "constant",
        "model.noise": "normal",
    }
    assert [p.key for p in s.swept] == ["model.lr", "model.hidden", "data.batch_size", "model.noise"]
    assert (s.name, s.project) == ("sweep", "p")


def test_random_draws_stay_in_their_distribution() -> None:
    s = spec(
        parameters={
            "a": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
            "b": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.25},
            "c": {"distribution": "q_log_uniform_values", "min": 8, "max": 256, "q": 8},
            "d": {"distribution": "log_uniform", "min": -3, "max": 0},
            "e": {"distribution": "int_uniform", "min": 1, "max": 3},
            "f": {"values": ["x", "y"], "probabilities": [1.0, 0.0]},
            "g": {"distribution": "inv_log_uniform_values", "min": 0.1, "max": 10},
            "h": {"distribution": "beta", "a": 2, "b": 5},
            "i": {"distribution": "q_normal", "mu": 10, "sigma": 2, "q": 1},
        }
    )
    rng = random.Random(0)
    draws = [{p.key: p.sample(rng) for p in s.params} for _ in range(300)]
    assert all(1e-4 <= d["a"] <= 1e-1 for d in draws)
    assert {d["b"] for d in draws} <= {0.0, 0.25, 0.5, 0.75, 1.0} and len({d["b"] for d in draws}) == 5
    assert all(isinstance(d["c"], int) and d["c"] % 8 == 0 and 8 <= d["c"] <= 256 for d in draws)
    assert all(math.exp(-3) <= d["d"] <= 1 for d in draws)
    assert {d["e"] for d in draws} == {1, 2, 3}
    assert {d["f"] for d in draws} == {"x"}
    assert all(0.1 <= d["g"] <= 10 for d in draws)
    assert all(0 <= d["h"] <= 1 for d in draws)
    assert all(isinstance(d["i"], int) for d in draws) and 9 <= sum(d["i"] for d in draws) / 300 <= 11
    # log-uniform: as many draws below the geometric midpoint (1e-2.5) as above
    assert 100 < sum(d["a"] < 10**-2.5 for d in draws) < 200


def test_grid_order_and_a_continuous_parameter_is_refused() -> None:
    s = spec(method="grid", parameters={"a": {"values": [1, 2]}, "b": {"min": 0, "max": 2}, "c": {"value": "k"}})
    assert s.grid() == [{"a": a, "b": b, "c": "k"} for a in (1, 2) for b in (0, 1, 2)]
    q = spec(method="grid", parameters={"w": {"distribution": "q_uniform", "min": 16, "max": 64, "q": 16}})
    assert [g["w"] for g in q.grid()] == [16, 32, 48]  # W&B's grid: numpy.arange(min, max, q)
    with pytest.raises(ConfigError, match="parameters.lr: method grid needs values"):
        spec(method="grid", parameters={"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}})


def test_bayes_proposes_inside_the_bounds_after_its_random_start() -> None:
    """Optuna's TPE (past its 10 random start-up trials) keeps every value in its distribution."""
    s = spec(
        method="bayes",
        parameters={
            "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
            "width": {"distribution": "q_uniform", "min": 16, "max": 128, "q": 16},
            "depth": {"distribution": "int_uniform", "min": 1, "max": 4},
            "act": {"values": ["relu", "gelu"]},
            "noise": {"distribution": "normal", "mu": 0, "sigma": 1},
            "epochs": {"value": 2},
        },
    )
    data = {"id": "ab12", "trials": []}
    for trial_id in range(25):
        values, raw = propose(s, data, trial_id)
        assert 1e-4 <= values["lr"] <= 1e-1
        assert values["width"] in range(16, 129, 16) and isinstance(values["width"], int)
        assert values["depth"] in (1, 2, 3, 4) and values["act"] in ("relu", "gelu")
        assert math.isfinite(values["noise"]) and values["epochs"] == 2
        score = -abs(math.log10(values["lr"]) + 2)  # best at lr = 1e-2
        data["trials"].append({"id": trial_id, "state": "finished", "raw": raw, "params": values, "metric": score})
    late = [abs(math.log10(t["params"]["lr"]) + 2) for t in data["trials"][15:]]
    early = [abs(math.log10(t["params"]["lr"]) + 2) for t in data["trials"][:10]]
    assert sum(late) / len(late) < sum(early) / len(early)  # the model, not chance, picks the later ones


def test_hyperband_bands_and_verdict_follow_w_and_b() -> None:
    hb = spec(parameters={"a": {"value": 1}}, early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2})
    assert hb.hyperband is not None and hb.hyperband.bands[:4] == [1, 2, 4, 8] and not hb.hyperband.strict
    s2 = spec(parameters={"a": {"value": 1}}, early_terminate={"type": "hyperband", "max_iter": 27, "s": 2})
    assert s2.hyperband is not None and s2.hyperband.bands == [3, 9]  # W&B's example: 27 / 3, 27 / 9
    s3 = spec(parameters={"a": {"value": 1}}, early_terminate={"type": "hyperband", "max_iter": 5, "s": 2, "eta": 2})
    assert s3.hyperband is not None and s3.hyperband.bands == [1, 2]  # int(2.5), int(1.25)
    with pytest.raises(ConfigError, match="no band"):
        spec(parameters={"a": {"value": 1}}, early_terminate={"type": "hyperband", "max_iter": 2, "s": 1, "eta": 3})


def _hb(strict: bool, *histories: list[float]) -> dict:
    return {
        "metric": "val_acc",
        "goal": "maximize",
        "hyperband": {"bands": [1, 2, 4], "eta": 2.0, "strict": strict},
        "trials": [{"history": [[10 * (i + 1), v] for i, v in enumerate(h)]} for h in histories],
    }


def test_hyperband_verdict_is_w_and_b_s_rule() -> None:
    # band 1 holds 0.9, 0.8, 0.1: the threshold is the value at rank int(3 / 2) = 1 (best first): 0.8
    data = _hb(False, [0.9, 0.95, 0.96], [0.8], [0.1])
    verdict = hyperband_verdict(data, 2)
    assert verdict is not None and "val_acc=0.1" in verdict and "threshold 0.8" in verdict
    assert hyperband_verdict(data, 1) is None and hyperband_verdict(data, 0) is None
    # with two trials at a band and eta = 2, the threshold is the worse one: nobody stops
    assert hyperband_verdict(_hb(False, [0.9], [0.1]), 1) is None
    # conservative (default): the best value so far counts; strict: the value at the band
    data = _hb(False, [0.9, 0.95], [0.8, 0.96], [0.97, 0.2])
    assert hyperband_verdict(data, 2) is None  # its best, 0.97, beats band 2's threshold
    verdict = hyperband_verdict(_hb(True, [0.9, 0.95], [0.8, 0.96], [0.97, 0.2]), 2)
    assert verdict is not None and "val_acc=0.2 (at validation 2)" in verdict
    # no band reached yet: nothing to judge
    assert hyperband_verdict({**_hb(False, [0.1]), "hyperband": {"bands": [3], "eta": 2.0}}, 0) is None


def test_values_pass_through_the_command_line_unchanged() -> None:
    import yaml

    for value in (1e-05, 0.001, 3, True, None, "relu", "1e-3", "true", [1, 2], 2.5e20, float("inf")):
        assert yaml.safe_load(_yaml_value(value)) == value


def test_state_lock_excludes_a_second_holder(tmp_path) -> None:
    state = SweepState(tmp_path / "s")
    fd = state.trial_lock(0)
    assert fd is not None
    assert state.trial_lock(0) is None  # held (by this fd) until closed
    import os

    os.close(fd)
    again = state.trial_lock(0)
    assert again is not None
    os.close(again)


def test_command_line_errors_name_the_fix(tmp_path, monkeypatch, capsys) -> None:
    from engine.sweep import sweep

    monkeypatch.chdir(tmp_path)  # the engine outside a project: the working directory is the root
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "ok.yaml").write_text("method: random\nparameters:\n  model.hidden: {values: [16]}\n")
    with pytest.raises(
        ConfigError, match=r"^model.hidden=8: model.hidden is in the spec's parameters; change it there"
    ):
        sweep("pkg.train", ["configs/ok.yaml", "model.hidden=8"])
    with pytest.raises(ConfigError, match="the sweep names and resumes its trials itself"):
        sweep("pkg.train", ["configs/ok.yaml", "run_name=x"])
    with pytest.raises(ConfigError, match=r"^configs/nope.yaml: no such sweep spec"):
        sweep("pkg.train", ["configs/nope.yaml"])
    with pytest.raises(ConfigError, match="--count needs a number of trials >= 1, got '0'"):
        sweep("pkg.train", ["--count", "0"])
    with pytest.raises(SystemExit) as done:
        sweep("pkg.train", ["--help"])
    assert done.value.code == 0 and "usage: python -m pkg.sweep [SPEC]" in capsys.readouterr().out
    assert not (tmp_path / "sweeps").exists()  # nothing was created
