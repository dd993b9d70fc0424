"""Typed configuration: dataclasses with defaults, a YAML file, and dotted command-line overrides.

`load_config` reads the project's ``configs/default.yaml`` (or ``--config PATH``), applies
``key=value`` and ``--key=value`` overrides (the W&B sweep agent passes the latter), validates
every value and reports all problems at once. Unknown keys are errors that name the closest
valid key; a problem in the file names its line. The project root (where ``configs/`` and a
relative ``output_dir`` live) is the folder of the package that vendors this engine, so a run
behaves the same from any working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

PRECISIONS = ("32", "16-mixed", "bf16-mixed", "bf16-true")


@dataclass
class FSDPConfig:
    """How trainer.strategy=fsdp shards the model."""

    wrap: list[str] = field(default_factory=list)  # classes sharded one by one (blocks); []: each child with parameters
    reshard_after_forward: bool = True  # free gathered weights after forward (less memory, one more gather)
    cpu_offload: bool = False  # keep shards and optimizer state in CPU memory
    activation_checkpointing: list[str] = field(default_factory=list)  # classes whose activations are recomputed


@dataclass
class TrainerConfig:
    max_epochs: int | None = 10
    max_steps: int = -1  # -1: no step limit
    precision: Literal["32", "16-mixed", "bf16-mixed", "bf16-true"] = "32"
    accelerator: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    devices: int = 1  # >1 without torchrun: the engine launches the processes itself
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"  # fsdp: shard weights and optimizer state over processes
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    num_nodes: int = 1
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    limit_train_batches: float | int | None = None  # int: batches, float: fraction of the epoch
    limit_val_batches: float | int | None = None
    val_check_interval: float | int | None = None  # int: every N train batches, float: fraction of an epoch
    check_val_every_n_epoch: int = 1
    num_sanity_val_steps: int = 2
    log_every_n_steps: int = 10
    fast_dev_run: bool | int = False
    seed: int = 42
    deterministic: Literal[False, True, "warn"] = False  # true: non-deterministic ops raise; warn: they warn
    num_threads: int | None = None  # CPU threads for torch ops (torch.set_num_threads); null: torch's default
    compile: bool = False  # torch.compile the module's forward
    sync_batchnorm: bool = False
    find_unused_parameters: bool = False
    on_nonfinite_loss: Literal["stop", "skip"] = "stop"
    async_checkpoint: bool = False  # write checkpoints in a background thread
    progress_bar: bool = True
    bottleneck_warn_fraction: float = 0.2  # warn when waiting for data exceeds this share of a step
    profiler: Literal["simple", "pytorch"] | None = None  # simple: time per phase and hook; pytorch: a trace


@dataclass
class CheckpointConfig:
    monitor: str | None = None
    mode: Literal["min", "max"] = "min"
    save_top_k: int = 1
    save_last: bool = True
    every_n_train_steps: int | None = None
    every_n_epochs: int | None = 1
    filename: str | None = None  # e.g. "{epoch}-{step}-{val_loss:.3f}"


@dataclass
class EarlyStoppingConfig:
    monitor: str | None = None  # empty/null: off
    mode: Literal["min", "max"] = "min"
    patience: int = 3
    min_delta: float = 0.0
    check_finite: bool = True
    stopping_threshold: float | None = None
    divergence_threshold: float | None = None


@dataclass
class WandbConfig:
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str | None = None
    entity: str | None = None
    name: str | None = None  # defaults to run_name
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    job_type: str | None = None
    log_model: Literal[False, True, "best", "last", "all"] = False
    watch: Literal[False, "gradients", "parameters", "all"] = False
    watch_log_freq: int = 100
    init_timeout: float = 30.0  # seconds an online start may take before the run continues offline


@dataclass
class DataConfig:
    batch_size: int = 32
    num_workers: int = 0


@dataclass
class Config:
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    data: Any = field(default_factory=DataConfig)
    model: Any = None
    run_name: str | None = None  # default: slurm-<job id> under SLURM, else a timestamp
    output_dir: str = "runs"  # a relative path is relative to the project root
    resume: str | None = None  # null | last | auto | a checkpoint path

    # Not a config key: the folder that relative paths resolve against (set by load_config).
    project_root: ClassVar[Path | None] = None


class ConfigError(ValueError):
    """Invalid configuration; the message lists every problem."""


def to_dict(cfg: Any) -> Any:
    """A dataclass tree as plain nested dicts (for YAML, W&B and checkpoints)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _yaml():
    import yaml  # lazy: only config loading needs it

    return yaml


def _parse_scalar(text: str) -> Any:
    """Command-line values use YAML syntax: 3, 1e-3, true, null, [a, b], "32"."""
    try:
        return _yaml().safe_load(text)
    except Exception:
        return text


_ENV_REF = re.compile(r"\$\$|\$\{(\w+)\}|\$(\w+)")


def _expand_env(node: Any, prefix: str, problems: list[str], where: Any) -> Any:
    """Expand ``${VAR}`` and ``$VAR`` in string values (``output_dir: $SCRATCH/runs``); ``$$`` is a ``$``.

    An unset variable is a problem naming it. A value that is one reference alone is read as
    YAML afterwards, so ``trainer.max_epochs: $EPOCHS`` is a number.
    """
    if isinstance(node, dict):
        return {k: _expand_env(v, f"{prefix}{k}.", problems, where) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, prefix, problems, where) for v in node]
    if not isinstance(node, str) or "$" not in node:
        return node
    key = prefix.rstrip(".")

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name is None:
            return "$"
        if name not in os.environ:
            problems.append(f"{where(key)}{key}: ${name} is not set (export {name}=..., or write the value)")
            return m.group(0)
        return os.environ[name]

    whole = _ENV_REF.fullmatch(node) is not None and node != "$$"
    expanded = _ENV_REF.sub(sub, node)
    return _parse_scalar(expanded) if whole and expanded != node else expanded


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, key: str, problems: list[str]) -> Any:
    """Check `value` against a type hint; convert where unambiguous (int -> float, 32 -> "32")."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(hint)
        for c in choices:
            if value == c and type(value) is type(c):
                return c
            if isinstance(c, str) and not isinstance(value, bool) and str(value) == c:
                return c
        problems.append(f"{key}: {value!r} is not one of {', '.join(repr(c) for c in choices)}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
        elif type(value) in args:  # an exact match wins: 5 stays an int in `float | int`
            return value
        else:
            for arg in args:
                if arg is type(None):
                    continue
                trial: list[str] = []
                out = _coerce(value, arg, key, trial)
                if not trial:
                    return out
        literals = [c for a in args if typing.get_origin(a) is Literal for c in typing.get_args(a)]
        if literals:  # Literal["simple", "pytorch"] | None: name the choices
            choices = ", ".join(repr(c) for c in literals) + (" or null" if type(None) in args else "")
            problems.append(f"{key}: {value!r} is not one of {choices}")
            return value
        names = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
        problems.append(f"{key}: expected {names}, got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            problems.append(f"{key}: expected a list, got {value!r}")
            return value
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return [_coerce(v, item, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    problems.append(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
    return value


def _closest(name: str, options: list[str], everywhere: list[str] | None = None) -> str:
    """ "; did you mean 'x'?": the same name in another section (``lr`` -> ``model.lr``), else a near miss."""
    leaf = name.rpartition(".")[2]
    elsewhere = [k for k in everywhere or () if k != name and k.rpartition(".")[2] == leaf]
    if elsewhere:
        return f"; did you mean '{elsewhere[0]}'?"
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    if not match and everywhere:
        by_leaf = {k.rpartition(".")[2]: k for k in reversed(everywhere)}
        near = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.8)
        match = [by_leaf[near[0]]] if near else []
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(options)}"


def _build(
    cls: type,
    values: dict[str, Any],
    prefix: str,
    problems: list[str],
    where: Any = lambda key: "",
    everywhere: list[str] | None = None,
) -> Any:
    """Instantiate dataclass `cls` from nested `values`, collecting every problem.

    `where(dotted_key)` prefixes a problem with its origin (``configs/default.yaml: line 7: ``);
    `everywhere` (every dotted key) lets an unknown key suggest its namesake in another section.
    """
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in fields:
            dotted = [f"{prefix}{n}" for n in fields]
            problems.append(f"{where(key)}unknown key '{key}'{_closest(key, dotted, everywhere)}")
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                problems.append(f"{where(key)}{key}: expected a section (mapping), got {value!r}")
                continue
            kwargs[name] = _build(hint, value, f"{key}.", problems, where, everywhere)
        else:
            found: list[str] = []
            kwargs[name] = _coerce(value, hint, key, found)
            problems += [where(key) + p for p in found]
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def parse_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, Any]], list[str]]:
    """Split argv into ([--config paths, in order], [(dotted key, value)], problems)."""
    paths: list[str] = []
    pairs: list[tuple[str, Any]] = []
    problems: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("--config", "-c"):
            if not args:
                problems.append("--config needs a path: --config configs/other.yaml")
                break
            paths.append(args.pop(0))
            continue
        key, eq, text = arg.lstrip("-").partition("=")
        if not eq:
            # `--key value` form, as some launchers write it.
            if arg.startswith("--") and args and not args[0].startswith("-"):
                key, text = key, args.pop(0)
            else:
                problems.append(f"'{arg}' is not KEY=VALUE (e.g. trainer.max_epochs=5)")
                continue
        if key == "config":
            paths.append(text)
            continue
        pairs.append((key, _parse_scalar(text)))
    return paths, pairs, problems


def validate(cfg: Config) -> list[str]:
    """Cross-field checks that types alone cannot express."""
    t, problems = cfg.trainer, []
    if t.max_epochs is not None and t.max_epochs < 1 and t.max_steps < 1:
        problems.append("trainer.max_epochs must be >= 1 (or set trainer.max_steps)")
    if t.max_epochs is None and t.max_steps < 1 and not t.fast_dev_run:
        problems.append("trainer.max_epochs is null: set trainer.max_steps to bound the run")
    if t.num_threads is not None and t.num_threads < 1:
        problems.append(f"trainer.num_threads must be >= 1 (or null for torch's default), got {t.num_threads}")
    for name in ("accumulate_grad_batches", "log_every_n_steps", "devices", "num_nodes", "check_val_every_n_epoch"):
        if getattr(t, name) < 1:
            problems.append(f"trainer.{name} must be >= 1, got {getattr(t, name)}")
    for name in ("limit_train_batches", "limit_val_batches", "val_check_interval"):
        v = getattr(t, name)
        if isinstance(v, float) and not 0.0 <= v <= 1.0:
            problems.append(f"trainer.{name}: a float is a fraction in [0, 1], got {v}; use an int for a count")
        if isinstance(v, int) and v < 0:
            problems.append(f"trainer.{name} must be >= 0, got {v}")
    if t.limit_train_batches is not None and t.limit_train_batches == 0:
        problems.append(
            "trainer.limit_train_batches=0 trains nothing; use a positive count or fraction "
            "(trainer.limit_val_batches=0 turns validation off)"
        )
    if t.gradient_clip_val is not None and t.gradient_clip_val <= 0:
        problems.append("trainer.gradient_clip_val must be > 0 (or null for no clipping)")
    if cfg.checkpoint.save_top_k < -1:
        problems.append("checkpoint.save_top_k must be -1 (all), 0 (none) or a positive count")
    if cfg.checkpoint.save_top_k not in (0, 1, -1) and not cfg.checkpoint.monitor:
        problems.append("checkpoint.save_top_k > 1 needs checkpoint.monitor (which metric ranks them?)")
    if cfg.early_stopping.patience < 0:
        problems.append("early_stopping.patience must be >= 0")
    if cfg.resume == "last" and not cfg.run_name:
        problems.append("resume=last continues a named run: pass its name, e.g. run_name=exp1 resume=last")
    if hasattr(cfg.data, "batch_size") and cfg.data.batch_size < 1:
        problems.append(f"data.batch_size must be >= 1, got {cfg.data.batch_size}")
    if hasattr(cfg.data, "num_workers") and cfg.data.num_workers < 0:
        problems.append("data.num_workers must be >= 0")
    return problems


def project_root() -> Path:
    """The root of the project this engine is vendored in, else the working directory.

    The engine lives in ``<root>/src/<package>/engine`` (or ``<root>/<package>/engine``); the root
    is the folder above holding ``pyproject.toml``. That holds for an editable install
    (``pip install -e .``) and for ``PYTHONPATH=src``; a package copied into site-packages has no
    project folder, and then the working directory stands in.
    """
    package = (__package__ or "").rpartition(".")[0]  # "my_research.engine" -> "my_research"
    module = sys.modules.get(package) if package else None
    location = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), None)
    if location:
        folder = Path(location).resolve()
        folder = folder.parent if folder.is_file() else folder
        for candidate in (folder.parent, folder.parent.parent):
            if (candidate / "pyproject.toml").is_file():
                return candidate
            if folder.parent.name != "src":
                break
    return Path.cwd()


def resolve_path(path: str | Path, root: Path | None = None) -> Path:
    """A relative `path` under the project root (absolute paths stay)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (root or Config.project_root or Path.cwd()) / p


def load_config(
    argv: list[str] | None = None,
    *,
    model: type | None = None,
    data: type = DataConfig,
    path: str | Path | Literal[False] | None = None,
    root: str | Path | None = None,
    exit_on_error: bool = True,
) -> Config:
    """Build the run's Config from layers, lowest first: the dataclass defaults, the base file,
    each ``--config PATH`` in order, then the ``KEY=VALUE`` overrides.

    `model`/`data` are the research code's dataclasses for the ``model.``/``data.`` sections.
    The base file is `path`, else ``configs/default.yaml``; `path=False` means none. A
    ``--config`` file (relative to the working directory, else to the project root) changes
    only the keys it holds. A file that does not exist or cannot be read is an error, never a
    silent fallback (only an absent ``configs/default.yaml`` is skipped when ``--config`` files
    are given); the files read are printed in one line. `root` defaults to `project_root()`;
    relative file paths in the config (``output_dir``) resolve against it. ``--help`` prints
    every key with its value, where that value came from and its comment, and exits 0. With
    `exit_on_error` a bad config prints one ``error:`` line per problem to stderr and exits
    with status 2 (a command-line run; with ``SCAFFOLD_DEBUG=1`` it raises instead); otherwise
    ConfigError is raised.
    """
    import os

    argv = sys.argv[1:] if argv is None else list(argv)
    base = Path(root).resolve() if root is not None else project_root()
    wants_help = any(a in ("-h", "--help") for a in argv)
    file_args, overrides, problems = parse_overrides([a for a in argv if a not in ("-h", "--help")])
    files: list[Path] = []
    if path is not False:
        default = resolve_path(path or Path("configs") / "default.yaml", base)
        if path is not None or not file_args or default.exists():
            files.append(default)
    for arg in file_args:
        given = Path(arg).expanduser()
        file_path = given if given.is_absolute() or given.is_file() else base / given
        if all(file_path.resolve() != f.resolve() for f in files):
            files.append(file_path)
    tree: dict[str, Any] = {}
    keys: dict[str, tuple[str, int, str]] = {}  # dotted key -> (file as shown, line, comment) of its last setting
    for file_path in files:
        shown = _shown(file_path, base)
        layer, lines = _read_file(file_path, shown, base, problems)
        _merge_tree(tree, layer)
        for key, (line, comment) in lines.items():
            old_comment = keys.get(key, ("", 0, ""))[2]
            keys[key] = (shown, line, comment or old_comment)
    for key, value in overrides:
        _set_dotted(tree, key, value)
    overridden = {key for key, _ in overrides}

    def source(key: str) -> tuple[str, int]:
        """Where the value of `key` came from: ("command line" | a file as shown | "default", line)."""
        key = key.split("[", 1)[0]
        parts = key.split(".")
        if any(".".join(parts[: i + 1]) in overridden for i in range(len(parts))):
            return "command line", 0
        if key in keys:
            return keys[key][0], keys[key][1]
        return "default", 0

    def where(key: str) -> str:
        origin, line = source(key)
        return f"{origin}: line {line}: " if line else ""

    tree = _expand_env(tree, "", problems, where)
    schema = _config_schema(model, data)
    cfg = _build(schema, tree, "", problems, where, _leaf_keys(schema))
    if model is not None and not dataclasses.is_dataclass(cfg.model):
        cfg.model = model()
    if not dataclasses.is_dataclass(cfg.data):
        cfg.data = data()
    cfg.project_root = base
    read = [_shown(f, base) for f in files]
    if wants_help:
        print(config_help(cfg, {k: (v[1], v[2]) for k, v in keys.items()}, ", then ".join(read), base, source))
        raise SystemExit(0)
    # One line per job: global rank 0 (torchrun's RANK, else srun's SLURM_PROCID), and not again in
    # the workers `trainer.devices=N` starts (their parent printed it).
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0"
    if read and rank == "0" and not os.environ.get("SCAFFOLD_SELF_LAUNCHED") and not problems:
        later = " (later files win; KEY=VALUE wins over all)" if len(read) > 1 else ""
        print(f"config: {', then '.join(read)}{later}", flush=True)
    if not problems:
        for problem in validate(cfg):
            first = re.match(r"[\w.]+", problem)
            problems.append((where(first.group(0)) if first else "") + problem)
    if problems:
        if exit_on_error and os.environ.get("SCAFFOLD_DEBUG") != "1":
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            raise SystemExit(2)
        raise ConfigError("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))
    return cfg


def _merge_tree(tree: dict[str, Any], layer: dict[str, Any]) -> None:
    """Merge a file's mapping into the layers below: sections merge key by key, values replace."""
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            _merge_tree(tree[key], value)
        else:
            tree[key] = value


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config schema (for "did you mean" across sections)."""
    out: list[str] = []
    if not dataclasses.is_dataclass(cls):
        return out
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        if dataclasses.is_dataclass(hint):
            out += _leaf_keys(hint, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def _shown(path: Path, root: Path) -> str:
    """`path` as messages show it: relative to the project root when inside it."""
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _read_file(
    path: Path, shown: str, root: Path, problems: list[str]
) -> tuple[dict[str, Any], dict[str, tuple[int, str]]]:
    """The file's mapping and, per dotted key, its line and trailing comment."""
    yaml = _yaml()
    if not path.is_file():
        hint = "pass --config PATH" if path.exists() else f"the project root is {root}; pass --config PATH"
        what = "is not a file" if path.exists() else "does not exist"
        problems.append(f"config file {path} {what} ({hint})")
        return {}, {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"config file {path} cannot be read: {exc}")
        return {}, {}
    try:
        loaded = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        problems.append(f"{shown}:{line} not valid YAML: {getattr(exc, 'problem', None) or exc}")
        return {}, {}
    if loaded is None:
        return {}, {}
    if not isinstance(loaded, dict):
        problems.append(
            f"{shown}: must hold a mapping of sections (trainer:, model:, ...), got {type(loaded).__name__}"
        )
        return {}, {}
    return loaded, _key_lines(node, text.splitlines())


def _key_lines(node: Any, lines: list[str], prefix: str = "") -> dict[str, tuple[int, str]]:
    """Dotted key -> (1-based line, comment after the value on that line) from YAML nodes."""
    yaml = _yaml()
    out: dict[str, tuple[int, str]] = {}
    if not isinstance(node, yaml.MappingNode):
        return out
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        key, line = f"{prefix}{key_node.value}", key_node.start_mark.line
        same_line = value_node.end_mark.line == line and not isinstance(value_node, yaml.MappingNode)
        rest = (
            lines[line][value_node.end_mark.column if same_line else key_node.end_mark.column :]
            if line < len(lines)
            else ""
        )
        rest = rest.lstrip(": \t")
        out[key] = (line + 1, rest[1:].strip() if rest.startswith("#") else "")
        out.update(_key_lines(value_node, lines, key + "."))
    return out


def _field_comments(cls: type) -> dict[str, str]:
    """``name: type = default  # comment`` -> {name: comment}, from the class and its bases."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for m in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, re.MULTILINE):
            out[m.group(1)] = m.group(2).strip()
    return out


def _fmt(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return ""
    text = _yaml().safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def config_help(
    cfg: Any, keys: dict[str, tuple[int, str]], shown: str, root: Path, source: Any = lambda key: ("", 0)
) -> str:
    """Usage, then every key with the value this run would use, where it came from, and what it means.

    `source(dotted_key)` -> (``default`` | a file | ``command line``, line): an edited dataclass
    default that a file still sets shows that file, not ``default``.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    prog = f"python -m {spec.name.removesuffix('.__main__')}" if spec is not None else Path(sys.argv[0]).name
    lines = [
        f"usage: {prog} [--config PATH] [KEY=VALUE | --KEY=VALUE]...",
        "",
        "Layers, lowest first: the dataclass defaults < "
        + "".join(f"{name} < " for name in shown.split(", then ") if name)
        + "the command line (trainer.max_epochs=5, --model.lr=1e-3); each --config FILE adds a file layer.",
        f"Relative paths (--config, output_dir) resolve against the project root, {root}.",
        "Keys, with the values a run would use now and [where each value comes from]:",
    ]

    def walk(obj: Any, prefix: str, indent: str) -> None:
        comments = _field_comments(type(obj))
        for f in dataclasses.fields(obj):
            value, key = getattr(obj, f.name), f"{prefix}{f.name}"
            comment = keys.get(key, (0, ""))[1] or comments.get(f.name, "")
            if dataclasses.is_dataclass(value):
                doc = inspect.getdoc(type(value)) or ""
                doc = "" if doc.startswith(type(value).__name__ + "(") else doc.splitlines()[0]
                lines.append("")
                lines.append(f"{indent}{f.name}:" + (f"  # {comment or doc}" if comment or doc else ""))
                walk(value, key + ".", indent + "  ")
            else:
                entry = f"{indent}{f.name}: {_fmt(value)}"
                origin, line = source(key)
                tag = f"[{origin}{f':{line}' if line else ''}]" if origin else ""
                lines.append((f"{entry:<36}  {tag:<26}" + (f"  # {comment}" if comment else "")).rstrip())

    walk(cfg, "", "")
    return "\n".join(lines)


def _config_schema(model: type | None, data: type) -> type:
    """Config with the `model`/`data` sections typed by the research code's dataclasses."""
    # Only the two overridden fields: the others (and their defaults) are inherited.
    annotations = {"data": data, "model": model if model is not None else Any}
    ns = {
        "__annotations__": annotations,
        "data": field(default_factory=data),
        "model": field(default_factory=model) if model is not None else None,
    }
    return dataclass(type("Config", (Config,), ns))


def dump_yaml(cfg: Any) -> str:
    return _yaml().safe_dump(to_dict(cfg), sort_keys=False)
