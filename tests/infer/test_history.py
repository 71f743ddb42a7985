"""The one History type: metrics per step, extras, chains, attribute access."""

from __future__ import annotations

import pickle

import pytest
import torch

from bnn.infer import History


def test_record_appends_per_step_and_attributes_read_metrics_then_extras() -> None:
    history = History("fit", extras={"best_epoch": 3})
    history.record(loss=1.0, nll=0.5)
    history.record(loss=0.5, nll=0.25)
    assert history.loss == [1.0, 0.5] and history.metrics["nll"] == [0.5, 0.25]
    assert history.best_epoch == 3
    with pytest.raises(AttributeError, match=r"this fit history has no 'kl'.*best_epoch"):
        _ = history.kl


def test_per_chain_reads_every_chain_and_history_pickles() -> None:
    chains = [History("nuts", extras={"divergences": d}) for d in (0, 2)]
    history = History("nuts", chains=chains, sample_stats={"diverging": torch.zeros(2, 5)})
    assert history.per_chain("divergences") == [0, 2]
    restored = pickle.loads(pickle.dumps(history))  # worker processes return histories
    assert restored.per_chain("divergences") == [0, 2]
    assert torch.equal(restored.sample_stats["diverging"], torch.zeros(2, 5))
