"""Streaming states as plain tensor bundles: detach, move, index, stack, save, load.

A model that learns in context carries a state from one call to the next: the
CMS levels' weights (``layers.cms.CMSState``), the self-modifying Titans'
memories (``layers.hope.SelfModState``), the whole model's (``lm.InContextState``).
Each is a dataclass whose tensors all have the batch first — one row per
sequence, so every session owns its memory — and ``StateBundle`` gives them the
verbs ``neural.memory.MemoryState`` has, over any nesting of tensors, tuples,
lists, dicts and other bundles:

- ``index(i)`` / ``StateBundle.stack([...])``: one sequence's state / a batch of states;
- ``save(path)`` / ``Cls.load(path, expect_fingerprint=…)``: safetensors, written
  atomically, with the structure and the configuration's fingerprint as metadata
  (no pickle); corrupt or foreign files raise ``StateError``;
- ``detach()``, ``to(device, dtype)``, ``clone()``, ``nbytes``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from lifelong.atomic import atomic_write_bytes
from lifelong.errors import StateError

FORMAT_VERSION = "1"
_BUNDLES: dict[str, type] = {}


def _register(cls: type) -> None:
    _BUNDLES[cls.__name__] = cls


# --------------------------------------------------------------------------- nesting


def map_tensors(obj: Any, fn) -> Any:
    """``obj`` with every tensor ``t`` replaced by ``fn(t)`` (structure kept)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, StateBundle):
        return dataclasses.replace(obj, **{
            f.name: map_tensors(getattr(obj, f.name), fn)
            for f in dataclasses.fields(obj) if f.name not in ("fingerprint", "config")
        })
    if isinstance(obj, tuple):
        return tuple(map_tensors(v, fn) for v in obj)
    if isinstance(obj, list):
        return [map_tensors(v, fn) for v in obj]
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def flatten(obj: Any, prefix: str = "s") -> tuple[dict[str, Tensor], Any]:
    """Tensors by name and a JSON-able description of the structure around them."""
    tensors: dict[str, Tensor] = {}

    def walk(o: Any, name: str) -> Any:
        if isinstance(o, Tensor):
            tensors[name] = o
            return {"t": name}
        if isinstance(o, StateBundle):
            return {"s": type(o).__name__, "f": {
                f.name: walk(getattr(o, f.name), f"{name}.{f.name}") for f in dataclasses.fields(o)
            }}
        if isinstance(o, tuple):
            return {"u": [walk(v, f"{name}.{i}") for i, v in enumerate(o)]}
        if isinstance(o, list):
            return {"l": [walk(v, f"{name}.{i}") for i, v in enumerate(o)]}
        if isinstance(o, dict):
            if not all(isinstance(k, str) for k in o):
                raise StateError("a state's dict keys must be strings", hint="this is a bug")
            return {"d": {k: walk(v, f"{name}.{k}") for k, v in o.items()}}
        if o is None or isinstance(o, (bool, int, float, str)):
            return {"v": o}
        raise StateError(f"cannot store a {type(o).__name__} in a state file", hint="this is a bug")

    return tensors, walk(obj, prefix)


def unflatten(tensors: dict[str, Tensor], structure: Any) -> Any:
    def build(s: Any) -> Any:
        if "t" in s:
            return tensors[s["t"]]
        if "s" in s:
            cls = _BUNDLES.get(s["s"])
            if cls is None:
                raise StateError(f"unknown state type {s['s']!r}", hint="load it with the lifelong that saved it")
            return cls(**{k: build(v) for k, v in s["f"].items()})
        if "u" in s:
            return tuple(build(v) for v in s["u"])
        if "l" in s:
            return [build(v) for v in s["l"]]
        if "d" in s:
            return {k: build(v) for k, v in s["d"].items()}
        return s["v"]

    return build(structure)


def _first_tensor(obj: Any) -> Tensor | None:
    found: list[Tensor] = []
    map_tensors(obj, lambda t: found.append(t) or t)
    return found[0] if found else None


def stack_any(states: list[Any]) -> Any:
    """Batch nested states (every tensor batch-first; everything else must agree)."""
    first = states[0]
    flat = [flatten(s) for s in states]
    struct = flat[0][1]
    for f, s in zip(flat[1:], states[1:]):
        if json.dumps(f[1], sort_keys=True, default=str) != json.dumps(struct, sort_keys=True, default=str):
            raise StateError(
                "cannot stack states of different configurations or positions",
                hint="stack states of one model taken at the same position (feed whole chunks)",
            )
    names = flat[0][0].keys()
    cat = {n: torch.cat([f[0][n] for f in flat], dim=0) for n in names}
    del first
    return unflatten(cat, struct)


def index_any(obj: Any, i: int | slice, batch: int) -> Any:
    if isinstance(i, int):
        if not -batch <= i < batch:
            raise StateError(f"state index {i} out of range for a batch of {batch}",
                             hint="index with 0 … batch_size - 1")
        i = i % batch
        sl = slice(i, i + 1)
    else:
        sl = i
    return map_tensors(obj, lambda t: t[sl])


def nbytes_any(obj: Any) -> int:
    total = [0]
    map_tensors(obj, lambda t: total.__setitem__(0, total[0] + t.numel() * t.element_size()) or t)
    return total[0]


# --------------------------------------------------------------------------- the mixin


def check_owned(state: Any, cls: type, fingerprint: str, batch_size: int, owner: str) -> None:
    """Refuse a state that another configuration made, or one of another batch size
    (the check every stateful layer runs before it reads a state)."""
    if not isinstance(state, cls) or state.fingerprint != fingerprint:
        raise StateError(f"this state does not belong to this {owner}",
                         hint="use the state the same model returned, or start with None")
    if state.batch_size != batch_size:
        raise StateError(f"{owner} state has batch {state.batch_size}, the input {batch_size}",
                         hint="stack / index the states to match the batch")


class StateBundle:
    """Base of the in-context states: every tensor field is batch-first."""

    FORMAT_NAME: ClassVar[str] = "lifelong.neural.State"

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        _register(cls)

    @property
    def batch_size(self) -> int:
        t = _first_tensor(self)
        return 0 if t is None else int(t.shape[0])

    @property
    def nbytes(self) -> int:
        return nbytes_any(self)

    def detach(self):
        """Cut the autograd graph (truncated backpropagation through time)."""
        return map_tensors(self, lambda t: t.detach())

    def clone(self):
        return map_tensors(self, lambda t: t.clone())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move, and cast floating tensors to ``dtype`` (integer tensors keep theirs)."""
        return map_tensors(self, lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else None))

    def index(self, i: int | slice):
        """The state of sequence ``i`` (a batch of one), or of a slice of sequences."""
        return index_any(self, i, self.batch_size)

    @classmethod
    def stack(cls, states: list):
        """Batch several states (e.g. one per session) into one, in order."""
        if not states:
            raise StateError("cannot stack an empty list of states", hint="pass at least one state")
        return stack_any(list(states))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to a safetensors file (atomically), structure and fingerprint as metadata."""
        from safetensors.torch import save

        tensors, structure = flatten(self)
        # clone: states may hold one tensor twice (e.g. read and running weights)
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
        meta = {"format": self.FORMAT_NAME, "version": FORMAT_VERSION,
                "fingerprint": str(getattr(self, "fingerprint", "")),
                "structure": json.dumps(structure)}
        atomic_write_bytes(path, save(tensors, metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike[str], expect_fingerprint: str | None = None):
        """Read a state written by ``save``; ``expect_fingerprint`` rejects another configuration's."""
        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise StateError(f"no state file at {p}", hint="check the path; save a state first")
        try:
            with safe_open(str(p), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # safetensors raises several types for bad bytes
            raise StateError(f"state file {p} is corrupt or truncated ({type(exc).__name__}: {exc})",
                             hint="restore it from a backup or start from a fresh state") from exc
        if meta.get("format") != cls.FORMAT_NAME:
            raise StateError(f"{p} is not a {cls.FORMAT_NAME} file",
                             hint=f"pass a file written by {cls.__name__}.save")
        if meta.get("version") != FORMAT_VERSION:
            raise StateError(f"{p} has state format version {meta.get('version')!r}; this lifelong "
                             f"reads {FORMAT_VERSION}", hint="save the state again with this version")
        if expect_fingerprint is not None and meta.get("fingerprint") != expect_fingerprint:
            raise StateError(f"{p} was saved by a model with another configuration",
                             hint="load it into the model that saved it")
        try:
            state = unflatten(tensors, json.loads(meta["structure"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise StateError(f"state file {p} is missing part of the state ({exc})",
                             hint="restore it from a backup or start from a fresh state") from exc
        if not isinstance(state, cls):
            raise StateError(f"{p} holds a {type(state).__name__}, not a {cls.__name__}",
                             hint=f"load it with {type(state).__name__}.load")
        B = state.batch_size
        bad = [k for k, t in tensors.items() if t.ndim == 0 or t.shape[0] != B]
        if bad:
            raise StateError(f"state file {p}: tensors {bad[:3]} do not have batch {B}",
                             hint="the file is inconsistent; restore it from a backup")
        return state
