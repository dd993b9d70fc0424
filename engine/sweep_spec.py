"""The W&B sweep configuration format (what `wandb sweep` accepts), read and sampled without a server.

`load_spec` checks a spec the way `wandb sweep` would and turns any key this runner cannot honour
into one error naming it (never a silently ignored setting). `Param` samples its distribution
(method random), lists its grid points (method grid) and maps to an Optuna distribution
(method bayes). Nested parameters (``model: {parameters: {lr: ...}}``) become dotted keys
(``model.lr``), the engine's override syntax.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

from .config import ConfigError

TOP_KEYS = (
    "name",
    "description",
    "method",
    "metric",
    "parameters",
    "early_terminate",
    "run_cap",
    # Read by `wandb agent` only: the offline runner starts `python -m <package>.train` itself.
    "program",
    "command",
    "project",
    "entity",
)
METHODS = ("grid", "random", "bayes")
PARAM_KEYS = ("value", "values", "distribution", "min", "max", "mu", "sigma", "q", "a", "b", "probabilities")
DISTRIBUTIONS = (
    "constant",
    "categorical",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform",
    "q_log_uniform_values",
    "inv_log_uniform",
    "inv_log_uniform_values",
    "normal",
    "q_normal",
    "log_normal",
    "q_log_normal",
    "beta",
    "q_beta",
)
_NEEDS = {  # the fields each distribution reads
    "constant": ("value",),
    "categorical": ("values",),
    "int_uniform": ("min", "max"),
    "uniform": ("min", "max"),
    "log_uniform": ("min", "max"),
    "log_uniform_values": ("min", "max"),
    "inv_log_uniform": ("min", "max"),
    "inv_log_uniform_values": ("min", "max"),
    "normal": (),
    "log_normal": (),
    "beta": (),
}
_GAUSS = NormalDist()


@dataclass
class Param:
    """One swept key: a distribution and its fields, as W&B defines them."""

    key: str
    distribution: str
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    @property
    def base(self) -> str:
        """The distribution without its ``q_`` prefix (quantization is applied after sampling)."""
        return self.distribution.removeprefix("q_")

    @property
    def swept(self) -> bool:
        return self.distribution != "constant"

    @property
    def log_scale(self) -> bool:
        return "log" in self.distribution

    def quantize(self, x: float) -> Any:
        if not self.distribution.startswith("q_"):
            return x
        q = self.get("q", 1)
        value = round(x / q) * q
        return int(round(value)) if isinstance(q, int) else float(value)

    def sample(self, rng: random.Random) -> Any:
        """A random draw (method random)."""
        d, f = self.base, self.fields
        if d == "constant":
            return f["value"]
        if d == "categorical":
            return rng.choices(f["values"], weights=f.get("probabilities"))[0]
        if d == "int_uniform":
            return rng.randint(f["min"], f["max"])
        if d == "beta":
            return self.quantize(rng.betavariate(f.get("a", 1.0), f.get("b", 1.0)))
        if d in ("normal", "log_normal"):
            return self.from_unit(rng.random())
        return self.quantize(self._continuous(rng.uniform(*self._bounds())))

    def _bounds(self) -> tuple[float, float]:
        """The interval a uniform draw is made in, before `_continuous` maps it."""
        lo, hi = float(self.fields["min"]), float(self.fields["max"])
        if self.base in ("log_uniform_values", "inv_log_uniform_values"):
            return math.log(lo), math.log(hi)
        return lo, hi

    def _continuous(self, u: float) -> float:
        d = self.base
        if d in ("log_uniform", "log_uniform_values", "inv_log_uniform_values"):
            return math.exp(u)  # inv_log_uniform_values: log(1/X) uniform is log X uniform
        if d == "inv_log_uniform":
            return math.exp(-u)
        return u

    def from_unit(self, u: float) -> Any:
        """Normal families through their inverse CDF: Optuna needs bounds, a probability has them."""
        u = min(max(u, 1e-9), 1 - 1e-9)
        x = self.get("mu", 0.0) + self.get("sigma", 1.0) * _GAUSS.inv_cdf(u)
        return self.quantize(math.exp(x) if self.base == "log_normal" else x)

    def grid_values(self, where: str) -> list[Any]:
        """The points a grid visits: values, a value, or an integer / quantized uniform range."""
        d, f = self.distribution, self.fields
        if d == "constant":
            return [f["value"]]
        if d == "categorical":
            return list(f["values"])
        if d == "int_uniform":
            return list(range(f["min"], f["max"] + 1))
        if d == "q_uniform":  # as W&B's grid: numpy.arange(min, max, q), max excluded
            q = f.get("q", 1)
            n = math.ceil((f["max"] - f["min"]) / q - 1e-9)
            whole = all(isinstance(v, int) for v in (f["min"], q))
            return [f["min"] + i * q if whole else float(f["min"] + i * q) for i in range(n)]
        raise ConfigError(
            f"{where}: parameters.{self.key}: method grid needs values (or int_uniform / q_uniform), "
            f"not distribution {d}: list the values to try, or use method random or bayes"
        )

    def optuna_distribution(self, where: str) -> Any:
        """(Optuna distribution of the raw value) for method bayes; None for a constant."""
        import optuna.distributions as od

        d, f = self.base, self.fields
        if d == "constant":
            return None
        if d == "categorical":
            return od.CategoricalDistribution(list(range(len(f["values"]))))  # indices: any value type works
        if d == "int_uniform":
            return od.IntDistribution(f["min"], f["max"])
        if d in ("normal", "log_normal"):
            return od.FloatDistribution(1e-9, 1 - 1e-9)
        if d == "beta":
            raise ConfigError(
                f"{where}: parameters.{self.key}: distribution {self.distribution} is not supported with method bayes; use method random"
            )
        lo, hi = self._bounds()
        if d in ("log_uniform_values", "inv_log_uniform_values"):
            return od.FloatDistribution(math.exp(lo), math.exp(hi), log=True)
        if d == "log_uniform":
            return od.FloatDistribution(math.exp(lo), math.exp(hi), log=True)
        if d == "inv_log_uniform":
            return od.FloatDistribution(math.exp(-hi), math.exp(-lo), log=True)
        return od.FloatDistribution(lo, hi)

    def from_optuna(self, raw: Any) -> Any:
        """The value an Optuna draw stands for."""
        d = self.base
        if d == "constant":
            return self.fields["value"]
        if d == "categorical":
            return self.fields["values"][raw]
        if d == "int_uniform":
            return int(raw)
        if d in ("normal", "log_normal"):
            return self.from_unit(raw)
        return self.quantize(float(raw))


@dataclass
class Hyperband:
    """W&B's hyperband early termination (its ``hyperband_stopping.py``): once a trial has reached
    a band (a count of validations), it stops when its best metric so far (``strict``: its metric
    at the band) is worse than the top 1/eta of every trial's metric at that band."""

    bands: list[int]
    eta: float
    strict: bool = False


@dataclass
class Spec:
    name: str
    method: str
    metric: str | None
    goal: str  # "minimize" | "maximize"
    params: list[Param]
    hyperband: Hyperband | None = None
    run_cap: int | None = None
    target: float | None = None
    project: str | None = None
    entity: str | None = None
    source: str = "sweep spec"
    identity: dict[str, Any] = field(default_factory=dict)  # what must not change while a sweep runs

    @property
    def swept(self) -> list[Param]:
        return [p for p in self.params if p.swept]

    def grid(self) -> list[dict[str, Any]]:
        """Every grid point, in the spec's order (the last key varies fastest)."""
        axes = [p.grid_values(self.source) for p in self.params]
        return [dict(zip([p.key for p in self.params], point, strict=True)) for point in itertools.product(*axes)]

    def better(self, a: float, b: float) -> bool:
        return a > b if self.goal == "maximize" else a < b


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _unknown(where: str, path: str, key: str, allowed: tuple[str, ...]) -> ConfigError:
    return _fail(where, f"{path}{key}: unsupported key {key!r} (supported here: {', '.join(allowed)})")


def _number(where: str, path: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"{path}.{name} must be a number, got {value!r}")
    return value


def _param(where: str, key: str, body: Any) -> Param:
    path = f"parameters.{key}"
    if not isinstance(body, dict):
        raise _fail(where, f"{path} must be a mapping (value:, values: or distribution:), got {body!r}")
    for name in body:
        if name not in PARAM_KEYS:
            raise _unknown(where, f"{path}.", name, PARAM_KEYS)
    d = body.get("distribution")
    if d is None:  # W&B's inference rules
        if "value" in body:
            d = "constant"
        elif "values" in body:
            d = "categorical"
        elif "mu" in body or "sigma" in body:
            d = "normal"
        elif "min" in body and "max" in body:
            both_int = all(isinstance(body[k], int) and not isinstance(body[k], bool) for k in ("min", "max"))
            d = "int_uniform" if both_int else "uniform"
        else:
            raise _fail(where, f"{path}: give value:, values:, min: and max:, or a distribution:")
    if d not in DISTRIBUTIONS:
        raise _fail(
            where, f"{path}.distribution: unsupported distribution {d!r} (supported: {', '.join(DISTRIBUTIONS)})"
        )
    base = d.removeprefix("q_")
    for need in _NEEDS[base]:
        if need not in body:
            raise _fail(where, f"{path}: distribution {d} needs {need}:")
    if base == "categorical" and (not isinstance(body["values"], list) or not body["values"]):
        raise _fail(where, f"{path}.values must be a non-empty list, got {body['values']!r}")
    for name in ("min", "max", "mu", "sigma", "q", "a", "b"):
        if name in body:
            _number(where, path, name, body[name])
    if "min" in body and "max" in body and body["min"] > body["max"]:
        raise _fail(where, f"{path}: min {body['min']} is above max {body['max']}")
    if base in ("log_uniform_values", "inv_log_uniform_values") and body["min"] <= 0:
        raise _fail(where, f"{path}: {d} needs min > 0 (the values themselves), got {body['min']}")
    if base == "int_uniform" and not all(isinstance(body[k], int) for k in ("min", "max")):
        raise _fail(where, f"{path}: int_uniform needs integer min and max")
    if "q" in body and body["q"] <= 0:
        raise _fail(where, f"{path}.q must be > 0, got {body['q']}")
    probabilities = body.get("probabilities")
    if probabilities is not None and (
        base != "categorical" or not isinstance(probabilities, list) or len(probabilities) != len(body["values"])
    ):
        raise _fail(where, f"{path}.probabilities needs values: and one probability per value")
    return Param(key, d, {k: v for k, v in body.items() if k != "distribution"})


def _params(where: str, tree: Any, prefix: str = "") -> list[Param]:
    if not isinstance(tree, dict) or not tree:
        raise _fail(where, f"parameters{'.' + prefix.rstrip('.') if prefix else ''} must be a non-empty mapping")
    out: list[Param] = []
    for key, body in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(body, dict) and "parameters" in body:  # nested: model: {parameters: {lr: ...}}
            extra = [k for k in body if k != "parameters"]
            if extra:
                raise _unknown(where, f"parameters.{dotted}.", extra[0], ("parameters",))
            out += _params(where, body["parameters"], f"{dotted}.")
        else:
            out.append(_param(where, dotted, body))
    return out


def _hyperband(where: str, body: Any) -> Hyperband:
    if not isinstance(body, dict):
        raise _fail(where, f"early_terminate must be a mapping (type: hyperband, ...), got {body!r}")
    allowed = ("type", "min_iter", "max_iter", "s", "eta", "strict")
    for name in body:
        if name not in allowed:
            raise _unknown(where, "early_terminate.", name, allowed)
    if body.get("type") != "hyperband":
        raise _fail(where, f"early_terminate.type: unsupported type {body.get('type')!r} (supported: hyperband)")
    eta = _number(where, "early_terminate", "eta", body.get("eta", 3))
    if eta <= 1:
        raise _fail(where, f"early_terminate.eta must be > 1, got {eta}")
    for name in ("min_iter", "max_iter", "s"):
        if name in body and (not isinstance(body[name], int) or body[name] < 1):
            raise _fail(where, f"early_terminate.{name} must be an integer >= 1, got {body[name]!r}")
    if "max_iter" in body and "s" in body:  # bands at max_iter / eta^k, k = 1 .. s (as W&B computes them)
        band, bands = float(body["max_iter"]), []
        for _ in range(body["s"]):
            band /= eta
            if band < 1:
                break
            bands.append(int(band))
    elif "min_iter" in body:  # bands at min_iter * eta^k
        bands = [int(body["min_iter"] * eta**k) for k in range(100) if body["min_iter"] * eta**k < 1e9]
    else:
        raise _fail(where, "early_terminate: hyperband needs min_iter, or max_iter and s")
    if not bands:
        raise _fail(where, "early_terminate: no band at 1 validation or more: raise max_iter or lower s or eta")
    if not isinstance(body.get("strict", False), bool):
        raise _fail(where, f"early_terminate.strict must be true or false, got {body['strict']!r}")
    return Hyperband(sorted(set(bands)), float(eta), body.get("strict", False))


def parse_spec(raw: Any, source: str, default_name: str) -> Spec:
    """Check a spec (a dict, as loaded from YAML); any key this runner cannot honour is an error."""
    where = source
    if not isinstance(raw, dict):
        raise _fail(where, "a sweep spec is a mapping (method:, metric:, parameters:)")
    for key in raw:
        if key not in TOP_KEYS:
            raise _unknown(where, "", key, TOP_KEYS)
    method = raw.get("method")
    if method not in METHODS:
        raise _fail(where, f"method: unsupported method {method!r} (supported: {', '.join(METHODS)})")
    metric = raw.get("metric") or {}
    if not isinstance(metric, dict):
        raise _fail(where, f"metric must be a mapping (name:, goal:), got {metric!r}")
    for key in metric:
        if key not in ("name", "goal", "target"):
            raise _unknown(where, "metric.", key, ("name", "goal", "target"))
    goal = metric.get("goal", "minimize")
    if goal not in ("minimize", "maximize"):
        raise _fail(where, f"metric.goal must be minimize or maximize, got {goal!r}")
    if method == "bayes" and not metric.get("name"):
        raise _fail(where, "method bayes needs metric.name (what to optimize)")
    if "early_terminate" in raw and not metric.get("name"):
        raise _fail(where, "early_terminate needs metric.name (what to compare)")
    if "parameters" not in raw:
        raise _fail(where, "parameters: missing (the keys to sweep)")
    params = _params(where, raw["parameters"])
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or isinstance(run_cap, bool) or run_cap < 1):
        raise _fail(where, f"run_cap must be an integer >= 1, got {run_cap!r}")
    name = str(raw.get("name") or default_name)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "sweep"
    spec = Spec(
        name=safe,
        method=method,
        metric=metric.get("name"),
        goal=goal,
        params=params,
        hyperband=_hyperband(where, raw["early_terminate"]) if "early_terminate" in raw else None,
        run_cap=run_cap,
        target=metric.get("target"),
        project=raw.get("project"),
        entity=raw.get("entity"),
        source=source,
        identity={k: raw.get(k) for k in ("method", "metric", "parameters", "early_terminate")},
    )
    if method == "grid":
        spec.grid()  # every parameter has grid points, or the error says which
    return spec


def load_spec(path: Path, shown: str | None = None) -> Spec:
    import yaml

    shown = shown or str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such sweep spec (the default is configs/sweep.yaml)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{shown}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_spec(raw, shown, path.stem)
