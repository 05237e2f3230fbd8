"""λ for the factorized LM: frequencies by hand, causality, scopes and cluster batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from memsig.data.corpora import TextCorpus
from memsig.data.lambdas import InputStatistics
from memsig.data.text import TextDataModule
from memsig.vocab import Vocab

VOCAB = Vocab()
V = len(VOCAB)


def bigram(pair: str) -> int:
    return VOCAB.encode(pair[0]).item() * V + VOCAB.encode(pair[1]).item()


def test_frequencies_by_hand_and_previous_context_is_causal() -> None:
    segs = [VOCAB.encode(s) for s in ("abab", "ba", "cab")]
    own = InputStatistics(context="self", smoothing=0.5).count(segs, V)
    f = own.frequencies(torch.tensor([0]))[0]
    total = 3 + 0.5 * V * V  # "ab", "ba", "ab" + smoothing
    assert f[bigram("ab")] == pytest.approx(2.5 / total) and f[bigram("ba")] == pytest.approx(1.5 / total)
    assert f.sum() == pytest.approx(1.0)
    prev = InputStatistics(context="previous", window=2, smoothing=0.5).count(segs, V)
    f = prev.frequencies(torch.arange(3))
    assert torch.allclose(f[0], torch.full((V * V,), 1 / (V * V)))  # nothing before the first segment
    assert f[2, bigram("ab")] == pytest.approx(2.5 / (4 + 0.5 * V * V))  # segments 0 and 1: ab ba ab ba
    changed = InputStatistics(context="previous", window=2).count([*segs[:2], VOCAB.encode("zzzz")], V)
    assert torch.equal(changed.frequencies(torch.tensor([2])), f[2:3])  # a segment's own text never enters its λ


def datamodule(tiny_corpus: Path, scope: str, regime: str = "segment") -> TextDataModule:
    stats = InputStatistics(scope=scope, clusters=4, kmeans_iters=3)
    return TextDataModule(
        TextCorpus(str(tiny_corpus)), VOCAB, batch_size=16, regime=regime, max_chars=30000, lambdas=stats
    )


def test_cluster_batches_share_one_group_and_lambda_varies_between_them(tiny_corpus: Path) -> None:
    dm = datamodule(tiny_corpus, "cluster")
    ds = dm.dataset("train")
    group = dm.lambda_groups("train")
    counts = dm.lambda_counts("train")
    lams = []
    for i in range(len(ds)):
        b = ds[i]
        assert len(set(group[b["segment_ids"]].tolist())) == 1
        torch.testing.assert_close(b["lam"], counts.frequencies(b["segment_ids"]).mean(0))
        lams.append(b["lam"])
    assert sum(b["mask"].sum().item() for b in map(ds.__getitem__, range(len(ds)))) > 0.9 * 30000 - len(group) * 2
    spread = torch.stack(lams).std(0)
    assert (spread > 0).sum() > 100  # λ varies from batch to batch on many bases
    assert len(dm.dataset("dev")) > 0 and dm.dataset("dev")[0]["lam"].shape == (V * V,)


def test_segment_and_domain_scopes(tiny_corpus: Path) -> None:
    seg = datamodule(tiny_corpus, "segment").dataset("train")[3]
    assert seg["lam"].shape == (len(seg["inputs"]), V * V)
    dm = datamodule(tiny_corpus, "domain", regime="stream")
    first, later = dm.dataset("test")[0]["lam"], dm.dataset("train")[5]["lam"]
    assert torch.equal(first, later) and torch.equal(first, dm.lambda_counts("train").total())


def test_moments_standardise_the_training_segments(tiny_corpus: Path) -> None:
    from memsig.models.factorized import FactorizedCharLM

    dm = datamodule(tiny_corpus, "segment")
    m = FactorizedCharLM(VOCAB, hidden_size=8, embedding_size=4)
    m.fit_lambda_norm(*dm.lambda_moments())
    z = torch.cat([m.normalize(f) for f in dm.lambda_counts("train").chunks()])
    e_space = bigram("e ")
    assert abs(z[:, e_space].mean()) < 0.05 and z[:, e_space].std() == pytest.approx(1.0, abs=0.05)


def test_per_segment_scopes_need_the_segment_regime(tiny_corpus: Path) -> None:
    with pytest.raises(ValueError, match="data.regime=segment"):
        datamodule(tiny_corpus, "cluster", regime="stream")
    with pytest.raises(ValueError, match="data.lambdas.scope"):
        InputStatistics(scope="corpus")
