"""Profilers (Lightning's `profiler=` argument): where the time of a fit goes.

- `PassThroughProfiler` (no profiler): `wrap` returns the function itself, so the training
  loop runs exactly the code it runs unprofiled;
- `SimpleProfiler` ("simple"): wall time per phase (data, forward, backward, optimizer,
  validation, checkpoint) and per hook, printed as a table when fit ends;
- `PyTorchProfiler` ("pytorch"): a `torch.profiler` trace of a few training steps, written
  as ``<default_root_dir>/profiler/fit.pt.trace.json`` (open it in https://ui.perfetto.dev
  or TensorBoard's profiler plugin).

The trainer instruments through `wrap(name, fn)` once per fit or epoch, never per step:
an off profiler costs nothing. Research code can time its own blocks with
``with self.trainer.profiler.profile("name"):`` (Lightning's API) under every profiler.
Times are host wall times: on a GPU, work the host only queued is counted where it waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import Trainer


class PassThroughProfiler:
    """No profiling: every method is a no-op and `wrap` returns `fn` unchanged."""

    enabled = False

    def setup(self, trainer: Trainer) -> None:
        pass

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn

    def profile(self, name: str) -> Any:
        return nullcontext()

    def teardown(self, trainer: Trainer) -> None:
        pass

    def summary(self) -> str:
        return ""


class SimpleProfiler(PassThroughProfiler):
    """Calls and total wall time per action; `summary()` is the table printed when fit ends."""

    enabled = True

    def __init__(self, dirpath: str | Path | None = None, filename: str | None = None, extended: bool = True) -> None:
        self.dirpath, self.filename = dirpath, filename
        self.records: dict[str, list[float]] = {}  # name -> [calls, seconds]
        self._started = 0.0
        self._elapsed = 0.0

    def setup(self, trainer: Trainer) -> None:
        self.records, self._started = {}, time.perf_counter()

    def _record(self, name: str) -> list[float]:
        return self.records.setdefault(name, [0, 0.0])

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        record, now = self._record(name), time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = now()
            try:
                return fn(*args, **kwargs)
            finally:
                record[0] += 1
                record[1] += now() - start

        return timed

    @contextmanager
    def profile(self, name: str) -> Iterator[None]:
        record, start = self._record(name), time.perf_counter()
        try:
            yield
        finally:
            record[0] += 1
            record[1] += time.perf_counter() - start

    def add(self, name: str, calls: int, seconds: float) -> None:
        """Totals measured elsewhere (the loop's own data-wait timer)."""
        record = self._record(name)
        record[0] += calls
        record[1] += seconds

    def teardown(self, trainer: Trainer) -> None:
        self._elapsed = time.perf_counter() - self._started
        self.add("[phase] data (next batch)", trainer.timer.batches, trainer.timer.wait)
        text = self.summary()
        trainer.print(text)
        if self.dirpath is not None and trainer.is_global_zero:
            path = Path(self.dirpath) / f"fit-{self.filename or 'profiler'}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")

    def summary(self) -> str:
        total = self._elapsed or sum(s for _, s in self.records.values()) or 1e-12
        rows = sorted(
            ((n, int(c), s) for n, (c, s) in self.records.items() if c),
            key=lambda r: (not r[0].startswith("[phase]"), -r[2]),
        )
        width = max([len(n) for n, _, _ in rows] + [len("Action")])
        header = f"| {'Action':<{width}} | {'Mean (s)':>10} | {'Calls':>7} | {'Total (s)':>10} | {'Percent':>7} |"
        rule = "-" * len(header)
        lines = ["FIT Profiler Report", rule, header, rule]
        lines.append(f"| {'Total':<{width}} | {'-':>10} | {'-':>7} | {total:>10.4f} | {100.0:>6.1f}% |")
        for name, calls, seconds in rows:
            lines.append(
                f"| {name:<{width}} | {seconds / calls:>10.6f} | {calls:>7} | {seconds:>10.4f} | "
                f"{100 * seconds / total:>6.1f}% |"
            )
        lines.append(rule)
        return "\n".join(lines)


class PyTorchProfiler(PassThroughProfiler):
    """A torch.profiler trace of training steps `wait + warmup + 1` to `wait + warmup + active`.

    The trace is a Chrome trace file (Perfetto, chrome://tracing, TensorBoard's profiler
    plugin); the forward, backward and optimizer of each step appear as labelled ranges.
    Extra keyword arguments go to `torch.profiler.profile` (e.g. ``record_shapes=True``).
    """

    enabled = True

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = None,
        wait: int = 1,
        warmup: int = 1,
        active: int = 3,
        row_limit: int = 15,
        **profiler_kwargs: Any,
    ) -> None:
        self.dirpath, self.filename = dirpath, filename
        self.wait, self.warmup, self.active, self.row_limit = wait, warmup, active, row_limit
        self.profiler_kwargs = profiler_kwargs
        self.trace_path: Path | None = None
        self._prof: Any = None
        self._written = False

    def setup(self, trainer: Trainer) -> None:
        import torch.profiler as tp

        root = Path(self.dirpath) if self.dirpath is not None else Path(trainer.default_root_dir) / "profiler"
        self.trace_path = root / f"{self.filename or 'fit'}.pt.trace.json"
        self._written = False
        activities = [tp.ProfilerActivity.CPU]
        if trainer.device.type == "cuda":
            activities.append(tp.ProfilerActivity.CUDA)

        def write(prof: Any) -> None:
            if trainer.is_global_zero:
                self.trace_path.parent.mkdir(parents=True, exist_ok=True)
                prof.export_chrome_trace(str(self.trace_path))
                self._written = True

        kwargs = {"activities": activities, **self.profiler_kwargs}
        schedule = tp.schedule(wait=self.wait, warmup=self.warmup, active=self.active, repeat=1)
        self._prof = tp.profile(schedule=schedule, on_trace_ready=write, **kwargs)
        self._prof.__enter__()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        from torch.profiler import record_function

        label = name.removeprefix("[phase] ")
        steps = name == "[phase] optimizer"

        def traced(*args: Any, **kwargs: Any) -> Any:
            with record_function(label):
                out = fn(*args, **kwargs)
            if steps and self._prof is not None:
                self._prof.step()  # one optimizer step = one profiler step
            return out

        return traced

    @contextmanager
    def profile(self, name: str) -> Iterator[None]:
        """As `wrap` for a block: "[phase] optimizer" (manual optimization's ``opt.step()``) also
        counts a profiler step."""
        from torch.profiler import record_function

        with record_function(name.removeprefix("[phase] ")):
            yield
        if name == "[phase] optimizer" and self._prof is not None:
            self._prof.step()

    def teardown(self, trainer: Trainer) -> None:
        if self._prof is None:
            return
        prof, self._prof = self._prof, None
        prof.__exit__(None, None, None)
        if self._written:
            trainer.print(self.summary_of(prof))
            trainer.print(f"profiler trace: {self.trace_path} (open in https://ui.perfetto.dev or TensorBoard)")
        else:
            needed = self.wait + self.warmup + self.active
            trainer.print(f"profiler: no trace written; the fit took fewer than the {needed} steps the schedule needs")

    def summary_of(self, prof: Any) -> str:
        try:
            return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=self.row_limit)
        except Exception:  # the table is a courtesy; the trace file is the result
            return ""


def make_profiler(profiler: str | PassThroughProfiler | None) -> PassThroughProfiler:
    """Lightning's forms: None, "simple", "pytorch", or a profiler object."""
    if profiler is None or profiler == "passthrough":
        return PassThroughProfiler()
    if isinstance(profiler, str):
        kinds = {"simple": SimpleProfiler, "pytorch": PyTorchProfiler, "advanced": None, "xla": None}
        if kinds.get(profiler) is None:
            raise ValueError(f"profiler={profiler!r} is not supported; use profiler='simple' or profiler='pytorch'")
        return kinds[profiler]()
    for method in ("setup", "wrap", "profile", "teardown"):
        if not callable(getattr(profiler, method, None)):
            raise TypeError(f"profiler {type(profiler).__name__} has no {method}(); pass 'simple', 'pytorch' or None")
    return profiler


__all__ = ["PassThroughProfiler", "PyTorchProfiler", "SimpleProfiler", "make_profiler"]
