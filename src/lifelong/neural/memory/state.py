"""``MemoryState``: everything a neural memory carries from one call to the next.

A state is a plain bundle of tensors with a leading batch dimension, so each
sequence (later: each user session) owns its memory:

- ``weights``   the memory MLP's weights, one tensor per layer, ``[B, H, in, out]``;
- ``momentum``  the surprise accumulator S, same shapes as ``weights``;
- ``position``  tokens seen so far, ``[B]`` (int64);
- ``conv``      the last ``conv_kernel - 1`` projected inputs (before the causal
                convolution) so the convolution continues across calls, ``[B, K-1, 3·H·d]``;
- ``pending_*`` keys, values and gate logits of a chunk that is not complete yet:
                the memory writes whole chunks only, so a call that ends mid-chunk
                keeps the rest here and the next call finishes the chunk, ``[B, H, P, ·]``.

``fingerprint`` names the configuration the state belongs to; a module refuses
a state with another fingerprint instead of silently misreading it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from lifelong.atomic import atomic_write_bytes
from lifelong.errors import StateError

FORMAT_NAME = "lifelong.neural.MemoryState"
FORMAT_VERSION = "1"


@dataclass
class MemoryState:
    weights: tuple[Tensor, ...]
    momentum: tuple[Tensor, ...]
    position: Tensor
    conv: Tensor
    pending_k: Tensor
    pending_v: Tensor
    pending_gates: Tensor
    fingerprint: str = ""
    config: dict = field(default_factory=dict, compare=False)

    # --- shape facts ------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return int(self.position.shape[0])

    @property
    def pending(self) -> int:
        """Tokens of the current, incomplete chunk not yet written to the weights."""
        return int(self.pending_k.shape[2])

    def _tensors(self) -> dict[str, Tensor]:
        out = {f"weights.{i}": w for i, w in enumerate(self.weights)}
        out.update({f"momentum.{i}": m for i, m in enumerate(self.momentum)})
        out.update(
            position=self.position,
            conv=self.conv,
            pending_k=self.pending_k,
            pending_v=self.pending_v,
            pending_gates=self.pending_gates,
        )
        return out

    def _map(self, fn) -> MemoryState:
        return replace(
            self,
            weights=tuple(fn(w) for w in self.weights),
            momentum=tuple(fn(m) for m in self.momentum),
            conv=fn(self.conv),
            pending_k=fn(self.pending_k),
            pending_v=fn(self.pending_v),
            pending_gates=fn(self.pending_gates),
        )

    # --- plumbing -----------------------------------------------------------

    def detach(self) -> MemoryState:
        """Cut the autograd graph (truncated backpropagation through time)."""
        return replace(self._map(lambda t: t.detach()), position=self.position.detach())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> MemoryState:
        """Move to ``device`` and/or cast floating tensors to ``dtype``; position stays int64."""
        moved = self._map(lambda t: t.to(device=device, dtype=dtype))
        return replace(moved, position=self.position.to(device=device))

    def clone(self) -> MemoryState:
        return replace(self._map(lambda t: t.clone()), position=self.position.clone())

    def index(self, i: int | slice) -> MemoryState:
        """The state of sequence ``i`` (a batch of one), or of a slice of sequences."""
        sl = slice(i, i + 1) if isinstance(i, int) else i
        if isinstance(i, int) and not -self.batch_size <= i < self.batch_size:
            raise StateError(
                f"state index {i} out of range for a batch of {self.batch_size}",
                hint="index with 0 … batch_size - 1",
            )
        if isinstance(i, int) and i < 0:
            sl = slice(i + self.batch_size, i + self.batch_size + 1)
        return replace(self._map(lambda t: t[sl]), position=self.position[sl])

    @staticmethod
    def stack(states: list[MemoryState]) -> MemoryState:
        """Batch several states (e.g. one per session) into one, in order."""
        if not states:
            raise StateError("cannot stack an empty list of states", hint="pass at least one state")
        first = states[0]
        for s in states[1:]:
            if s.fingerprint != first.fingerprint:
                raise StateError(
                    "cannot stack states of different memory configurations",
                    hint="stack only states produced by the same NeuralMemoryConfig",
                )
            if s.pending != first.pending:
                raise StateError(
                    f"cannot stack states at different offsets within a chunk "
                    f"({first.pending} vs {s.pending} pending tokens)",
                    hint="stack states whose positions agree modulo chunk_size, "
                    "e.g. feed whole chunks",
                )

        def cat(get) -> Tensor:
            return torch.cat([get(s) for s in states], dim=0)

        return MemoryState(
            weights=tuple(cat(lambda s, i=i: s.weights[i]) for i in range(len(first.weights))),
            momentum=tuple(cat(lambda s, i=i: s.momentum[i]) for i in range(len(first.momentum))),
            position=cat(lambda s: s.position),
            conv=cat(lambda s: s.conv),
            pending_k=cat(lambda s: s.pending_k),
            pending_v=cat(lambda s: s.pending_v),
            pending_gates=cat(lambda s: s.pending_gates),
            fingerprint=first.fingerprint,
            config=first.config,
        )

    # --- files --------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to a safetensors file (atomically), with format version and config."""
        from safetensors.torch import save

        tensors = {k: v.detach().contiguous().cpu() for k, v in self._tensors().items()}
        metadata = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "config": json.dumps(self.config, sort_keys=True),
            "depth": str(len(self.weights)),
        }
        atomic_write_bytes(path, save(tensors, metadata=metadata))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], expect_fingerprint: str | None = None
    ) -> MemoryState:
        """Read a state written by ``save``.

        ``expect_fingerprint`` (``NeuralMemoryConfig.fingerprint()``) rejects a
        state saved by a differently configured memory. Corrupt, truncated or
        foreign files raise ``StateError``.
        """
        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise StateError(f"no memory state file at {p}", hint="check the path; save a state first")
        try:
            with safe_open(str(p), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # safetensors raises several types for bad bytes
            raise StateError(
                f"memory state file {p} is corrupt or truncated ({type(exc).__name__}: {exc})",
                hint="restore it from a backup or start from a fresh state",
            ) from exc
        if meta.get("format") != FORMAT_NAME:
            raise StateError(
                f"{p} is a safetensors file but not a lifelong memory state",
                hint="pass a file written by MemoryState.save",
            )
        if meta.get("version") != FORMAT_VERSION:
            raise StateError(
                f"{p} has memory-state format version {meta.get('version')!r}; "
                f"this lifelong reads version {FORMAT_VERSION}",
                hint="save the state again with this version of lifelong",
            )
        fp = meta.get("fingerprint", "")
        if expect_fingerprint is not None and fp != expect_fingerprint:
            raise StateError(
                f"{p} was saved by a memory with a different configuration "
                f"(fingerprint {fp}, expected {expect_fingerprint})",
                hint=f"load it into a NeuralMemory built with config {meta.get('config')}",
            )
        try:
            depth = int(meta["depth"])
            state = cls(
                weights=tuple(tensors[f"weights.{i}"] for i in range(depth)),
                momentum=tuple(tensors[f"momentum.{i}"] for i in range(depth)),
                position=tensors["position"],
                conv=tensors["conv"],
                pending_k=tensors["pending_k"],
                pending_v=tensors["pending_v"],
                pending_gates=tensors["pending_gates"],
                fingerprint=fp,
                config=json.loads(meta.get("config", "{}")),
            )
        except (KeyError, ValueError) as exc:
            raise StateError(
                f"memory state file {p} is missing part of the state ({exc})",
                hint="restore it from a backup or start from a fresh state",
            ) from exc
        B = state.batch_size
        for name, t in state._tensors().items():
            if t.dim() == 0 or t.shape[0] != B:
                raise StateError(
                    f"memory state file {p}: tensor {name} has shape {tuple(t.shape)}, expected batch {B}",
                    hint="the file is inconsistent; restore it from a backup",
                )
            # A memory that diverged (or a damaged file) would make every retrieve()
            # return NaN, silently, and the error would surface far from here.
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise StateError(
                    f"memory state file {p}: tensor {name} holds NaN or infinite values",
                    hint="the memory diverged before it was saved (lower max_lr) or the file is "
                    "damaged; restore it from a backup or start from a fresh state",
                )
        if state.position.dtype != torch.int64:
            raise StateError(f"memory state file {p}: position is {state.position.dtype}, not int64",
                             hint="the file is inconsistent; restore it from a backup")
        return state
