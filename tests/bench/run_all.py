"""Run the benchmarks (each bench_*.py in its own process) and print one markdown table.

Called by ci/bench, which sets up the environment; see ci/bench for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchlib import CLOCK_NOTE, Row

HERE = Path(__file__).resolve().parent
ORDER = ["step", "digits", "ddp", "startup", "checkpoint", "bottleneck", "memory", "gpu"]


def machine() -> str:
    """One line about where the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for name in ("torch", "pytorch_lightning"):
        try:
            module = __import__(name)
            versions.append(f"{name.replace('pytorch_lightning', 'Lightning')} {module.__version__}")
        except ImportError:
            pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {', '.join(versions)}"
    )


def run(name: str, extra: list[str], timeout: float) -> list[Row]:
    script = HERE / f"bench_{name}.py"
    start = time.perf_counter()
    print(f"==> {script.name} {' '.join(extra)}", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(
            [sys.executable, str(script), "--json", *extra], capture_output=True, text=True, timeout=timeout, cwd=HERE
        )
    except subprocess.TimeoutExpired:
        return [Row(name, "all", "n/a", note=f"timed out after {timeout:.0f} s")]
    print(f"    {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-ROWS "):
            return [Row(**r) for r in json.loads(line[len("BENCH-ROWS ") :])]
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    print(proc.stderr[-3000:], file=sys.stderr)
    return [Row(name, "all", "n/a", note=f"failed (exit {proc.returncode}): {tail[:150]}")]


def table(rows: list[Row]) -> str:
    lines = [
        "| Benchmark | Run | Result | vs baseline | Target | Note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    previous = None
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        target = r.target
        if r.ok is not None:
            target = f"{r.target} {'met' if r.ok else '**missed**'}"
        bench = r.bench if r.bench != previous else ""
        previous = r.bench
        lines.append(f"| {bench} | {r.run} | {r.result} | {ratio} | {target} | {r.note} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the benchmarks and print a markdown table.")
    parser.add_argument("--gpu", action="store_true", help="also run the CUDA benchmark (skipped without a GPU)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(ORDER)}")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions with valgrind: deterministic, adds about 10 minutes",
    )
    args = parser.parse_args()
    names = [n for n in ORDER if n != "gpu" or args.gpu]
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - set(ORDER)
        if unknown:
            parser.error(f"--only: unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(ORDER)}")
        names = [n for n in ORDER if n in wanted]
    extra = ["--quick"] if args.quick else []
    started = time.perf_counter()
    rows: list[Row] = []
    for name in names:
        more = ["--instructions"] if args.instructions and name in ("step", "digits") else []
        rows += run(name, extra + more, timeout=900)
    text = (
        f"Machine: {machine()}.\n"
        f"In-process timings are {CLOCK_NOTE} of the training thread. The per-step and digits runs take turns "
        "in lockstep (ratios: median of paired blocks); the others alternate (ratios: median / median).\n\n"
        + table(rows)
        + "\n"
    )
    print(text)
    print(f"(ci/bench took {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    missed = [r for r in rows if r.ok is False]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
