"""Gated DeltaNet: the chunked form against the token-by-token recurrence, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lifelong.neural.deltanet import GatedDeltaNet, chunk_gated_delta_rule, naive_gated_delta_rule


def _inputs(seed: int, b: int = 2, h: int = 3, t: int = 45, dk: int = 8, dv: int = 6):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    q = rnd(b, h, t, dk)
    k = F.normalize(rnd(b, h, t, dk), dim=-1)
    v = rnd(b, h, t, dv)
    log_decay = -torch.rand(b, h, t, generator=g, dtype=torch.float64) * 2  # down to e^-2
    beta = torch.rand(b, h, t, generator=g, dtype=torch.float64)
    state = rnd(b, h, dk, dv)
    return q, k, v, log_decay, beta, state


@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
def test_chunked_equals_naive_outputs_and_final_state(chunk: int) -> None:
    q, k, v, g, beta, s0 = _inputs(seed=chunk)
    o_ref, s_ref = naive_gated_delta_rule(q, k, v, g, beta, s0)
    o, s = chunk_gated_delta_rule(q, k, v, g, beta, s0, chunk_size=chunk)
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


def test_chunked_equals_naive_gradients() -> None:
    leaves = [t.requires_grad_() for t in _inputs(seed=7, t=21)]
    probe = torch.randn(2, 3, 21, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def grads(fn):
        o, s = fn(*leaves)
        loss = (o * probe).sum() + s.square().sum()
        return torch.autograd.grad(loss, leaves)

    ref = grads(naive_gated_delta_rule)
    got = grads(lambda *a: chunk_gated_delta_rule(*a, chunk_size=8))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_recurrence_matches_its_definition_for_one_token() -> None:
    # S_1 = a (I - b k k^T) S_0 + b k v^T, o_1 = S_1^T q, written out with matrices.
    q, k, v, g, beta, s0 = _inputs(seed=3, b=1, h=1, t=1)
    o, s = naive_gated_delta_rule(q, k, v, g, beta, s0)
    kk, vv, qq = k[0, 0, 0], v[0, 0, 0], q[0, 0, 0]
    a, b = g[0, 0, 0].exp(), beta[0, 0, 0]
    expected = a * (torch.eye(8, dtype=torch.float64) - b * torch.outer(kk, kk)) @ s0[0, 0] + b * torch.outer(kk, vv)
    torch.testing.assert_close(s[0, 0], expected)
    torch.testing.assert_close(o[0, 0, 0], expected.T @ qq)


def test_layer_streams_exactly_across_chunk_boundaries() -> None:
    torch.manual_seed(0)
    layer = GatedDeltaNet(dim=24, n_heads=3, conv_size=4, chunk_size=8).double()
    x = torch.randn(2, 30, 24, dtype=torch.float64)
    y_full, s_full = layer(x)
    parts, state = [], None
    for lo, hi in [(0, 3), (3, 4), (4, 17), (17, 30)]:
        y, state = layer(x[:, lo:hi], state)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, dim=1), y_full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state["S"], s_full["S"], rtol=1e-10, atol=1e-10)
