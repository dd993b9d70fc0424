"""engine.demos: Lightning's demo classes train as under Lightning; WikiText2 says how to get its file.

`scenario()` runs unchanged under Lightning (``engine`` aliased to ``lightning.pytorch``, as
tests/ports/record_lightning.py does); it printed the LIGHTNING numbers below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch


def _sums(module: torch.nn.Module) -> list[float]:
    return [round(float(p.double().sum()), 8) for p in module.parameters()]


def scenario(workdir: Path) -> dict[str, Any]:
    from engine.demos.boring_classes import ManualOptimBoringModel, RandomDataset

    import engine as pl
    from engine.demos import BoringDataModule, BoringModel, DemoModel, Transformer

    def trainer(**kwargs: Any) -> Any:
        return pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, **kwargs)

    out: dict[str, Any] = {}
    pl.seed_everything(1)
    model, dm = BoringModel(), BoringDataModule()
    t = trainer(limit_train_batches=10, limit_val_batches=2)
    t.fit(model, datamodule=dm)
    out["boring"] = {"steps": t.global_step, "weights": _sums(model)}
    pl.seed_everything(2)
    manual = ManualOptimBoringModel()
    trainer(limit_train_batches=5, limit_val_batches=0).fit(manual)
    out["manual"] = _sums(manual)
    pl.seed_everything(3)
    demo = DemoModel()
    trainer(limit_train_batches=4).fit(demo, torch.utils.data.DataLoader(RandomDataset(32, 16), batch_size=4))
    out["demo"] = _sums(demo)
    pl.seed_everything(4)
    lm = Transformer(vocab_size=50, ninp=16, nhead=2, nhid=32, nlayers=1)
    tokens = torch.randint(50, (2, 7))
    out["transformer_out"] = list(lm(tokens, tokens).shape)
    return out


LIGHTNING = {  # lightning==2.6.6, torch==2.13.0+cpu
    "boring": {"steps": 20, "weights": [-0.51509614, 1.09939542]},
    "manual": [1.91544529, -0.17976],
    "demo": [-0.97248174, -1.58030937],
    "transformer_out": [14, 50],
}


def test_demo_models_train_as_under_lightning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert scenario(tmp_path) == LIGHTNING


def test_wikitext2_reads_a_local_file_and_names_the_download_when_it_is_missing(tmp_path: Path) -> None:
    from engine.demos import LightningTransformer, WikiText2

    with pytest.raises(FileNotFoundError, match=r"wikitext-2\.txt.*raw\.githubusercontent\.com.*curl -o"):
        WikiText2(data_dir=tmp_path)
    (tmp_path / "wikitext-2.txt").write_text("the cat sat on the mat\nthe dog sat\n" * 20)
    data = WikiText2(data_dir=tmp_path, block_size=5)
    assert data.vocab_size == 7 and len(data) == len(data.data) // 5 - 1  # 6 words and <eos>
    inputs, target = data[0]
    assert torch.equal(inputs[1:], target[:-1])
    assert LightningTransformer(vocab_size=data.vocab_size).model.vocab_size == 7


def test_grad_norm_gives_lightnings_keys_and_values() -> None:
    from engine.utilities import grad_norm

    layer = torch.nn.Linear(2, 1)
    layer.weight.grad = torch.tensor([[3.0, 4.0]])
    layer.bias.grad = torch.tensor([12.0])
    norms = grad_norm(layer, 2)
    assert {k: float(v) for k, v in norms.items()} == {
        "grad_2.0_norm/weight": 5.0,
        "grad_2.0_norm/bias": 12.0,
        "grad_2.0_norm_total": 13.0,
    }
    assert float(grad_norm(layer, "inf")["grad_inf_norm_total"]) == 12.0
    with pytest.raises(ValueError, match="positive"):
        grad_norm(layer, 0)
