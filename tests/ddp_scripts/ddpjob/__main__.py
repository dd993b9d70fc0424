"""``python -m ddpjob KEY=VALUE ...``: the project's train entry point, with test probes."""

from __future__ import annotations

from .engine import load_config, run, seed_everything
from .job import DataConfig, ModelConfig, Probe, RankStop, ToyClassifier, ToyData


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(argv, model=ModelConfig, data=DataConfig, path=False)
    seed_everything(cfg.trainer.seed)
    return run(cfg, ToyClassifier(cfg.model), ToyData(cfg.data), callbacks=[Probe(), RankStop(cfg.model)])


if __name__ == "__main__":
    raise SystemExit(main())
