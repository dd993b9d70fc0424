"""``python -m <package>.engine.consolidate CKPT_DIR OUT.ckpt``: one file from a sharded checkpoint.

A run with ``trainer.strategy=fsdp`` saves each checkpoint as a folder of per-process shards.
This writes the same checkpoint as one ordinary ``.ckpt`` file, in one process and on CPU:
for inference, sharing, ``YourModule.load_from_checkpoint(OUT.ckpt)``, or resuming a run
without FSDP. Needs memory for the whole model and optimizer state.
"""

from __future__ import annotations

import sys

from .checkpoint import CheckpointError
from .fsdp import consolidate


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if len(args) != 2:
        print("usage: python -m <package>.engine.consolidate CKPT_DIR OUT.ckpt", file=sys.stderr)
        return 2
    try:
        loop = consolidate(args[0], args[1])
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args[1]} (epoch {loop['epoch']}, step {loop['global_step']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
