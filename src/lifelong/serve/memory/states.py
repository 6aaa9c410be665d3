"""A served session's model state: batch it with others, split it back, store it as bytes.

A ``CausalLM`` state is a nest of lists, dicts, tensors (batch first) and
dataclasses (``MemoryState``, the in-context states of ``neural.streaming``).
Several sessions' states can share one forward when their *signatures* agree:
the same nesting, the same tensor shapes apart from the batch, and the same
plain values (an attention cache's ``pos``, say). Sessions at different
positions of a neural memory agree as long as they sit at the same offset
within a chunk (``position`` itself is a per-row tensor).

``encode`` / ``decode`` write a state as safetensors bytes with the nesting as
JSON metadata: nothing in a stored state can run code, and a damaged blob is a
``StateError``, never a crash.
"""

from __future__ import annotations

import copy as _copy
import dataclasses
import json
from typing import Any

import torch
from torch import Tensor

from lifelong.errors import StateError
from lifelong.neural.memory.state import MemoryState

FORMAT = "lifelong.serve.SessionState"
FORMAT_VERSION = "1"


def _dataclasses() -> dict[str, type]:
    # the state types a stored state may name: the memory's and every streaming bundle
    import lifelong.neural.lm  # noqa: F401  (registers InContextState)
    from lifelong.neural.streaming import _BUNDLES

    return {"MemoryState": MemoryState, **_BUNDLES}


def _fields(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def signature(obj: Any) -> Any:
    """A hashable description of ``obj`` that two states share exactly when they can be stacked."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Tensor):
        return ("T", str(obj.dtype), tuple(obj.shape[1:]))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(signature(v) for v in obj))
    if isinstance(obj, dict):
        return ("D", tuple((k, signature(v)) for k, v in sorted(obj.items())))
    if dataclasses.is_dataclass(obj):
        if isinstance(obj, MemoryState):  # its config dict rides along, the fingerprint names it
            return ("M", obj.fingerprint, tuple(signature(getattr(obj, f)) for f in _fields(obj)
                                                if f not in ("config", "fingerprint")))
        return (type(obj).__name__, tuple(signature(getattr(obj, f)) for f in _fields(obj)))
    raise StateError(f"cannot batch a {type(obj).__name__} in a model state", hint="this is a bug")


def stack(states: list[Any]) -> Any:
    """One batched state from states of equal signature (rows in order)."""
    first = states[0]
    if isinstance(first, Tensor):
        return _whole(states) if first._base is not None else torch.cat(states, dim=0)
    if isinstance(first, list):
        return [stack([s[i] for s in states]) for i in range(len(first))]
    if isinstance(first, tuple):
        return tuple(stack([s[i] for s in states]) for i in range(len(first)))
    if isinstance(first, dict):
        if first and all(not isinstance(v, (Tensor, list, tuple, dict)) and
                         not dataclasses.is_dataclass(v) for v in first.values()):
            return first  # plain data (a MemoryState's config): equal by signature
        return {k: stack([s[k] for s in states]) for k in first}
    if dataclasses.is_dataclass(first):
        return dataclasses.replace(first, **{f: stack([getattr(s, f) for s in states])
                                             for f in _fields(first)})
    return first  # plain values: equal by signature


def _whole(rows: list[Tensor]) -> Tensor:
    """``torch.cat(rows)``; when the rows are the rows of one tensor, in order (``split``'s
    views of the last step's batch, all still together), that tensor itself, uncopied."""
    base = rows[0]._base
    n = len(rows)
    if base is None or base.shape[0] != n or base.shape[1:] != rows[0].shape[1:] or base.dim() == 0:
        return torch.cat(rows, dim=0)
    step, start, strides = base.stride(0), base.storage_offset(), base.stride()
    for i, t in enumerate(rows):
        if t._base is not base or t.storage_offset() != start + i * step or t.stride() != strides \
                or t.shape[0] != 1:
            return torch.cat(rows, dim=0)
    return base


def split(state: Any, n: int, *, copy: bool = True) -> list[Any]:
    """The ``n`` rows of a batched state, each a batch of one. ``copy``: each row's tensors
    are its own (no row pins the batch); else they are views into the batch's tensors
    (``compact`` them before a row outlives its batch's other rows)."""
    row = _splitter(state, n, copy)
    return [row(i) for i in range(n)]


def _splitter(obj: Any, n: int, copy: bool):
    """A function ``i -> row i of obj``: the tensors are cut once, the nesting rebuilt per row
    (plain data, such as a ``MemoryState``'s config, is shared by the rows)."""
    if isinstance(obj, Tensor):
        parts = obj.split(1)
        if copy:
            parts = [p.clone() for p in parts]
        return parts.__getitem__
    if isinstance(obj, (list, tuple)):
        fs = [_splitter(v, n, copy) for v in obj]
        kind = type(obj)
        return lambda i: kind(f(i) for f in fs)
    if isinstance(obj, dict):
        if not _has_tensor(obj):
            return lambda i: obj
        fd = {k: _splitter(v, n, copy) for k, v in obj.items()}
        return lambda i: {k: f(i) for k, f in fd.items()}
    if dataclasses.is_dataclass(obj):
        fd = {f: _splitter(getattr(obj, f), n, copy) for f in _fields(obj)}

        def build(i: int) -> Any:
            new = _copy.copy(obj)  # no __init__: the fields are set below, row by row
            new.__dict__.update({k: f(i) for k, f in fd.items()})
            return new

        return build
    return lambda i: obj


def _has_tensor(obj: Any) -> bool:
    if isinstance(obj, Tensor):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_has_tensor(v) for v in obj)
    if isinstance(obj, dict):
        return any(_has_tensor(v) for v in obj.values())
    return dataclasses.is_dataclass(obj)


def compact(obj: Any) -> Any:
    """``obj`` with every tensor that is a view into a larger one copied out (so that it no
    longer keeps the larger one alive); tensors that own their storage are kept as they are."""
    def walk(o: Any) -> Any:
        if isinstance(o, Tensor):
            return o.clone() if o.untyped_storage().nbytes() > o.numel() * o.element_size() else o
        if isinstance(o, (list, tuple)):
            return type(o)(walk(v) for v in o)
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()} if _has_tensor(o) else o
        if dataclasses.is_dataclass(o):
            new = _copy.copy(o)
            new.__dict__.update({f: walk(getattr(o, f)) for f in _fields(o)})
            return new
        return o

    return walk(obj)


def nbytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj``."""
    total = [0]

    def walk(o: Any) -> None:
        if isinstance(o, Tensor):
            total[0] += o.numel() * o.element_size()
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif dataclasses.is_dataclass(o):
            for f in _fields(o):
                walk(getattr(o, f))

    walk(obj)
    return total[0]


# --------------------------------------------------------------------------- bytes


def _flatten(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach()  # encode copies the bytes out
        return {"t": key}
    if isinstance(obj, list):
        return {"l": [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, tuple):
        return {"u": [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise StateError("a state's dict keys must be strings", hint="this is a bug")
        return {"d": {k: _flatten(v, tensors) for k, v in obj.items()}}
    if dataclasses.is_dataclass(obj):
        name = type(obj).__name__
        if name not in _dataclasses():
            raise StateError(f"cannot store a {name} in a session state", hint="this is a bug")
        return {"s": name, "f": {f: _flatten(getattr(obj, f), tensors) for f in _fields(obj)}}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"v": obj}
    raise StateError(f"cannot store a {type(obj).__name__} in a session state", hint="this is a bug")


def _unflatten(node: Any, tensors: dict[str, Tensor], known: dict[str, type], depth: int = 0) -> Any:
    if depth > 64 or not isinstance(node, dict) or len(node) not in (1, 2):
        raise ValueError("malformed structure")
    if "t" in node:
        return tensors[node["t"]]
    if "l" in node:
        return [_unflatten(v, tensors, known, depth + 1) for v in node["l"]]
    if "u" in node:
        return tuple(_unflatten(v, tensors, known, depth + 1) for v in node["u"])
    if "d" in node:
        return {str(k): _unflatten(v, tensors, known, depth + 1) for k, v in node["d"].items()}
    if "s" in node:
        cls = known.get(node["s"])
        if cls is None:
            raise ValueError(f"unknown state type {node['s']!r}")
        return cls(**{str(k): _unflatten(v, tensors, known, depth + 1) for k, v in node["f"].items()})
    if "v" in node:
        v = node["v"]
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise ValueError("malformed value")
        return v
    raise ValueError("malformed structure")


def encode(state: Any, logits: Tensor | None, tokens: int, fingerprint: str) -> bytes:
    """A session's state, the logits of its last token and its token count, as safetensors bytes."""
    tensors: dict[str, Tensor] = {}
    structure = _flatten(state, tensors)
    if logits is not None:
        tensors["logits"] = logits.detach().cpu().contiguous()
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "fingerprint": fingerprint,
            "tokens": str(int(tokens)), "structure": json.dumps(structure)}
    return safetensors_bytes(tensors, meta)


_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
           torch.uint8: "U8", torch.bool: "BOOL"}


def safetensors_bytes(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors serialization of ``tensors`` (the format's layout: an 8-byte little-endian
    header length, the JSON header, then each tensor's bytes, back to back, in the header's
    order), written directly: ``safetensors.torch.save`` spends a millisecond in per-tensor
    checks on a state of a few dozen small tensors, which a server pays on every request.
    ``safetensors.torch.load`` reads it (and a test holds it to ``save``'s output)."""
    header: dict[str, Any] = {"__metadata__": metadata}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _DTYPES:
            raise StateError(f"cannot store a {t.dtype} tensor", hint="this is a bug")
        raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-aligned
    return b"".join([len(head).to_bytes(8, "little"), head, *chunks])


def decode(blob: bytes, fingerprint: str) -> tuple[Any, Tensor | None, int]:
    """``(state, logits, tokens)`` from ``encode``'s bytes; anything else is a ``StateError``."""
    from safetensors.torch import load

    hint = "restore the session's state from a copy (PUT …/state) or delete the session"
    try:
        tensors = load(bytes(blob))
        meta = _metadata(blob)
    except Exception as exc:  # safetensors raises several types for bad bytes
        raise StateError(f"the stored state is corrupt or truncated ({type(exc).__name__})", hint=hint) from exc
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise StateError("the bytes are not a session state of this lifelong", hint=hint)
    if meta.get("fingerprint") != fingerprint:
        raise StateError("the state was made by a model with another configuration",
                         hint="restore it into a server of the model that made it")
    try:
        tokens = int(meta["tokens"])
        logits = tensors.pop("logits", None)
        state = _unflatten(json.loads(meta["structure"]), tensors, _dataclasses())
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise StateError(f"the stored state is malformed ({exc})", hint=hint) from exc
    if tokens < 0:
        raise StateError("the stored state has a negative token count", hint=hint)
    for name, t in tensors.items():
        if t.ndim == 0 or t.shape[0] != 1:
            raise StateError(f"the stored state's tensor {name} is not one session's", hint=hint)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise StateError("the stored state holds NaN or infinite values", hint=hint)
    if logits is not None and (logits.ndim != 1 or not bool(torch.isfinite(logits).all())):
        raise StateError("the stored state's logits are malformed", hint=hint)
    return state, logits, tokens


def _metadata(blob: bytes) -> dict[str, str]:
    # the safetensors header: 8 bytes of little-endian length, then JSON
    n = int.from_bytes(bytes(blob[:8]), "little")
    if n <= 0 or n > len(blob) - 8:
        raise ValueError("bad header length")
    header = json.loads(bytes(blob[8 : 8 + n]))
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("bad metadata")
    return {str(k): str(v) for k, v in meta.items()}


# --------------------------------------------------------------------------- decoding at any offset


def _memories(state: Any) -> list[MemoryState] | None:
    """The neural memories of a state made of nothing else (lists of ``MemoryState``), or None."""
    if isinstance(state, MemoryState):
        return [state]
    if isinstance(state, list):
        out: list[MemoryState] = []
        for v in state:
            m = _memories(v)
            if m is None:
                return None
            out += m
        return out
    return None


def one_token_any_offset(state: Any) -> bool:
    """Whether one more token leaves every memory of ``state`` mid-chunk (no write happens):
    then the step reads only the chunk-start weights and the convolution cache, whatever
    the tokens pending in the chunk, and sessions at different offsets can share it."""
    mems = _memories(state)
    return bool(mems) and all(m.pending + 1 < int(m.config.get("chunk_size", 0)) for m in mems)


def strip_pending(state: Any) -> Any:
    """``state`` with the pending tokens of each memory set aside (position at the chunk start)."""
    if isinstance(state, MemoryState):
        return dataclasses.replace(state, position=state.position - state.pending,
                                   pending_k=state.pending_k[:, :, :0], pending_v=state.pending_v[:, :, :0],
                                   pending_gates=state.pending_gates[:, :, :0])
    return [strip_pending(v) for v in state]


def restore_pending(old: Any, new: Any) -> Any:
    """The state after one token: ``new`` (from the stripped state) with ``old``'s pending tokens
    put back in front of the one it added."""
    if isinstance(old, MemoryState):
        return dataclasses.replace(
            new, position=old.position + 1,
            pending_k=torch.cat([old.pending_k, new.pending_k], dim=2),
            pending_v=torch.cat([old.pending_v, new.pending_v], dim=2),
            pending_gates=torch.cat([old.pending_gates, new.pending_gates], dim=2))
    return [restore_pending(o, n) for o, n in zip(old, new)]
