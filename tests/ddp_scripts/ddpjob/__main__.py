"""``python -m ddpjob KEY=VALUE ...``: the project's train entry point, with test probes."""

from __future__ import annotations

import logging
import os
import sys

from .engine import load_config, run, seed_everything
from .job import DataConfig, ModelConfig, Probe, RankStop, ToyClassifier, ToyData


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(argv, model=ModelConfig, data=DataConfig, path=False)
    seed_everything(cfg.trainer.seed)
    return run(cfg, ToyClassifier(cfg.model), ToyData(cfg.data), callbacks=[Probe(), RankStop(cfg.model)])


if __name__ == "__main__":
    code = main()
    # Everything the tests read is written by now. A gloo process group that an FSDP-sharded
    # module still references is destroyed during interpreter finalization, where torch's gloo
    # threads now and then abort the process ("terminate called without an active exception")
    # after a finished run; skip finalization so the exit code is the run's.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
