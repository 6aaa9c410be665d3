"""A run of whole chunks of read + write (chunk gates with momentum) as one
autograd node, and the one place that picks how it runs.

``chunk_loop(save, q, k, v, two_theta, keep, eta, *W, *S)`` runs on the compiled
CPU loop (``native.py``, ``csrc/chunk_loop.cpp``) when it is built and the
tensors are float32/float64 on the CPU, else in eager PyTorch
(``fused.chunk_forward`` / ``fused.chunk_backward`` chunk by chunk). Both
compute the same equations and are checked against the float64 naive
reference and finite differences in the tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lifelong.neural.memory import native
from lifelong.neural.memory.fused import chunk_backward, chunk_forward


def chunk_loop(save: bool, *args: Tensor) -> tuple[Tensor, ...]:
    """Y and the L final weights and momenta of a run of whole chunks.

    Inputs: ``save`` (keep what the backward needs), Q, K, V [N, n·b, d],
    two_theta [N, n, b, 1], keep = 1 − α and eta [N, n], then the L chunk-start
    weights and the L momenta. Outputs: Y [N, n·b, d], the L final weights, the
    L final momenta.
    """
    q, weight = args[0], args[6]
    on_cpu = q.device.type == "cpu" and weight.dtype in (torch.float32, torch.float64)
    ext = native.load() if on_cpu else None
    if ext is not None:
        return NativeChunkLoop.apply(ext, save, *args)
    return EagerChunkLoop.apply(save, *args)


class NativeChunkLoop(torch.autograd.Function):
    """The run of chunks on the compiled loop: one memory per thread, forward and
    outer backward, the elementwise steps fused (``csrc/chunk_loop.cpp``)."""

    @staticmethod
    def forward(ctx, ext, save, q, k, v, two_theta, keep, eta, *tensors):  # type: ignore[override]
        # The inner loop runs in the dtype of the memory's weights, autocast or not
        # (under bf16 autocast the projections hand in bf16 q, k, v).
        with torch.autocast(q.device.type, enabled=False):
            dtype = tensors[0].dtype
            q, k, v, keep, eta = (t.to(dtype).contiguous() for t in (q, k, v, keep, eta))
            two_theta = two_theta.to(dtype).reshape(two_theta.shape[:3]).contiguous()
            L = len(tensors) // 2
            ctx.L, ctx.ext, ctx.device_type = L, ext, q.device.type
            out = ext.forward(q, k, v, two_theta, keep, eta,
                              [w.contiguous() for w in tensors[:L]],
                              [s.contiguous() for s in tensors[L:]], save)
            if save:
                ctx.save_for_backward(q, k, two_theta, keep, eta, *out[1 + 2 * L :])
            return tuple(out[: 1 + 2 * L])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_y, *grads):  # type: ignore[override]
        with torch.autocast(ctx.device_type, enabled=False):
            L = ctx.L
            q, k, two_theta, keep, eta, *rest = ctx.saved_tensors
            g = ctx.ext.backward(q, k, two_theta, keep, eta, rest, g_y, list(grads[:L]), list(grads[L:]))
            g[3] = g[3].unsqueeze(-1)  # two_theta [N, n, b, 1]
            return (None, None, *g)


class EagerChunkLoop(torch.autograd.Function):
    """The run of chunks in eager PyTorch: the forward runs ``chunk_forward``
    chunk by chunk, the backward runs ``chunk_backward`` from the last chunk to
    the first, carrying the gradients of the weights and momenta between them
    and writing the gradients of Q, K, V and the gates straight into
    whole-sequence tensors."""

    @staticmethod
    def forward(ctx, save, q, k, v, two_theta, keep, eta, *tensors):  # type: ignore[override]
        # The inner loop runs in the dtype of the memory's weights, autocast or not
        # (under bf16 autocast the projections hand in bf16 q, k, v).
        with torch.autocast(q.device.type, enabled=False):
            dtype = tensors[0].dtype
            q, k, v, two_theta, keep, eta = (t.to(dtype) for t in (q, k, v, two_theta, keep, eta))
            L = len(tensors) // 2
            W, S = list(tensors[:L]), list(tensors[L:])
            n, b = keep.shape[1], two_theta.shape[2]
            ctx.L, ctx.b, ctx.n, ctx.device_type = L, b, n, q.device.type
            y = q.new_empty(q.shape[0], n * b, W[-1].shape[-1])
            saved: list[Tensor] = []
            for i in range(n):
                rows = slice(i * b, (i + 1) * b)
                y_i, W, S, saved_i = chunk_forward(
                    q[:, rows], k[:, rows], v[:, rows], two_theta[:, i], keep[:, i], eta[:, i], W, S
                )
                y[:, rows] = y_i
                if save:
                    saved.extend(saved_i)
            ctx.save_for_backward(*saved)
            return (y, *W, *S)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_y, *grads):  # type: ignore[override]
        with torch.autocast(ctx.device_type, enabled=False):
            L, b, n = ctx.L, ctx.b, ctx.n
            saved = ctx.saved_tensors
            per = len(saved) // n
            ref = saved[4]  # a weight: dtype, device, batch
            g_y = None if g_y is None else g_y.to(ref.dtype)
            g_w = [None if g is None else g.to(ref.dtype) for g in grads[:L]]
            g_s = [None if g is None else g.to(ref.dtype) for g in grads[L:]]
            N, d = ref.shape[0], saved[3].shape[-1]
            g_q, g_k, g_v = (ref.new_empty(N, n * b, d) for _ in range(3))
            g_two_theta = ref.new_empty(N, n, b, 1)
            g_keep, g_eta = ref.new_empty(N, n), ref.new_empty(N, n)
            for i in range(n - 1, -1, -1):
                rows = slice(i * b, (i + 1) * b)
                gq, gk, gv, g_two_theta[:, i], g_keep[:, i], g_eta[:, i], g_w, g_s = chunk_backward(
                    list(saved[i * per : (i + 1) * per]), L, b,
                    None if g_y is None else g_y[:, rows], g_w, g_s,
                )
                g_q[:, rows], g_k[:, rows], g_v[:, rows] = gq, gk, gv
            return (None, g_q, g_k, g_v, g_two_theta, g_keep, g_eta, *g_w, *g_s)
