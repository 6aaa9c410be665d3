"""Stateful layers refuse a state another configuration made, or one of another batch size."""

from __future__ import annotations

import pytest
import torch

from lifelong.errors import StateError
from lifelong.neural.layers.cms import CMSConfig, ContinuumMemory
from lifelong.neural.lm import build_model

from .test_models import tiny


def test_cms_refuses_a_foreign_state_and_a_wrong_batch():
    layer = ContinuumMemory(CMSConfig(dim=8, hidden=16, chunk_sizes=(2,)))
    other = ContinuumMemory(CMSConfig(dim=8, hidden=16, chunk_sizes=(4,)))
    x = torch.randn(2, 4, 8)
    with pytest.raises(StateError, match="does not belong to this CMS configuration"):
        layer(x, other.init_state(2))
    with pytest.raises(StateError, match="CMS configuration state has batch 3, the input 2"):
        layer(x, layer.init_state(3))
    layer(x, layer.init_state(2))  # its own state of the right batch is taken


@pytest.mark.parametrize("kind", ["hope", "ttt"])
def test_a_model_refuses_another_configurations_state(kind):
    model = build_model(tiny(kind))
    ids = torch.randint(0, 40, (2, 8))
    _, state = model(ids)
    other = build_model(tiny(kind, dim=48))  # another configuration of the same kind
    _, foreign = other(ids)
    with pytest.raises(StateError):
        model(ids, foreign)
    model(ids, state)  # its own state continues
