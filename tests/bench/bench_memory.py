"""Memory: peak RSS of a fresh process that trains the digits example for 2 epochs.

Each run is a new process (bench_digits.py --child), so the number is the whole process:
Python, torch, the framework and the training. Variants alternate; medians of the runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchlib import Row, main, median, ratio, rounds, run_py

BENCH = "Memory (peak RSS, digits example, 2 epochs)"
CHILD = Path(__file__).with_name("bench_digits.py")


def peak_rss_mb(kind: str) -> float:
    _, proc = run_py(CHILD, "--child", kind, "--epochs", "2")
    for line in proc.stdout.splitlines():
        if line.startswith("MAXRSS_KB "):
            return int(line.split()[1]) / 1024  # ru_maxrss is in KiB on Linux
    raise RuntimeError(f"bench_digits.py --child {kind} failed:\n{proc.stderr[-2000:]}")


def has_lightning() -> bool:
    return run_py("import pytorch_lightning")[1].returncode == 0


def bench(args: argparse.Namespace) -> list[Row]:
    n = 1 if args.quick else args.rounds
    variants = {"hand-written": lambda: peak_rss_mb("hand"), "engine": lambda: peak_rss_mb("engine")}
    if has_lightning():
        variants["Lightning"] = lambda: peak_rss_mb("lightning")
    try:
        sizes = rounds(variants, n, warmup=0)  # RSS has no warm-up effect worth dropping a run for
    except RuntimeError as e:
        return [Row(BENCH, "engine", "n/a", note=str(e).splitlines()[-1][:150])]
    base = sizes["hand-written"]
    rows = []
    for name, values in sizes.items():
        note = f"fresh process each, median of {n}" if name == "hand-written" else ""
        rows.append(
            Row(
                BENCH,
                name,
                f"{median(values):.0f} MiB",
                ratio(values, base),
                "<= 1.05x" if name == "engine" else "",
                note,
            )
        )
    return rows


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=3)


if __name__ == "__main__":
    main(bench, add_args)
