"""Adapters of a namespace: LoRA weights that hold what its notes said, versioned on disk.

``lifelong consolidate --into-weights`` trains a namespace's notes into a LoRA
adapter of the embedded model (``lifelong.train.distill``). Each round makes a
new version; the last complete one is *current*. The layout, under
``<data dir>/adapters`` (``root`` overrides it)::

    NAMESPACE/
      CURRENT               {"version": 3}: written atomically after a version is complete
      v0001/                a peft adapter folder (adapter_config.json,
      v0002/                adapter_model.safetensors) plus lifelong.json (what the
      v0003/                round consolidated, from which parent, how it trained)
                            and data/ (the round's training examples, replayed later)
      .work/                the round in progress: its plan, data and checkpoints

A version folder is built in ``.work`` and renamed into place whole, and only
then does ``CURRENT`` move, so a reader (``hf:local?adapter=NAMESPACE``)
always gets a complete adapter: the previous one until the new one is done.

A spec names an adapter as ``NAMESPACE`` (its current version),
``NAMESPACE@N`` (version N) or a path to a peft adapter folder (an export).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifelong.atomic import atomic_write_text
from lifelong.errors import ConfigError, NotFoundError
from lifelong.paths import data_dir

META_FILE = "lifelong.json"
META_FORMAT = "lifelong.adapter/1"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
_VERSION_DIR = re.compile(r"^v(\d{4,})$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def adapters_root() -> Path:
    """Where namespaces keep their adapters: ``<data dir>/adapters``."""
    return data_dir() / "adapters"


@dataclass(frozen=True)
class AdapterVersion:
    """One complete adapter of a namespace."""

    version: int
    path: Path
    meta: dict[str, Any]

    @property
    def parent(self) -> int | None:
        return self.meta.get("parent")

    def size_bytes(self) -> int:
        """Bytes of the adapter weights (what a reader loads; not the training data)."""
        f = self.path / "adapter_model.safetensors"
        return f.stat().st_size if f.exists() else 0


def _check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace) or ".." in namespace:
        raise ConfigError(f"invalid namespace {namespace!r} for an adapter",
                          hint="letters, digits, '.', '_' and '-' (start with a letter or digit)")
    return namespace


class AdapterStore:
    """The adapter versions of one namespace."""

    def __init__(self, namespace: str, root: str | Path | None = None) -> None:
        self.namespace = _check_namespace(namespace)
        self.root = Path(root) if root is not None else adapters_root()
        self.folder = self.root / namespace

    # -- reads -------------------------------------------------------------
    def version_dir(self, version: int) -> Path:
        return self.folder / f"v{version:04d}"

    @property
    def work_dir(self) -> Path:
        """The round in progress (absent when none is)."""
        return self.folder / ".work"

    def versions(self) -> list[AdapterVersion]:
        """Complete versions, oldest first (a folder without its meta is not one)."""
        if not self.folder.is_dir():
            return []
        out = []
        for p in self.folder.iterdir():
            m = _VERSION_DIR.match(p.name)
            if m and (p / META_FILE).is_file() and all((p / f).is_file() for f in PEFT_FILES):
                out.append(AdapterVersion(int(m.group(1)), p, read_meta(p)))
        return sorted(out, key=lambda v: v.version)

    def get(self, version: int) -> AdapterVersion:
        for v in self.versions():
            if v.version == version:
                return v
        raise NotFoundError(f"namespace {self.namespace!r} has no adapter version {version}",
                            hint=f"list them with `lifelong adapter list -n {self.namespace}`")

    def current(self) -> AdapterVersion | None:
        pointer = self.folder / "CURRENT"
        if not pointer.is_file():
            return None
        try:
            version = json.loads(pointer.read_text(encoding="utf-8"))["version"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{pointer} is damaged", hint="point it at a version with "
                              f"`lifelong adapter use N -n {self.namespace}`") from exc
        return None if version is None else self.get(int(version))

    def chain(self, version: AdapterVersion | None) -> list[AdapterVersion]:
        """``version`` and its ancestors, oldest first: the rounds it has learned."""
        out: list[AdapterVersion] = []
        seen: set[int] = set()
        while version is not None and version.version not in seen:
            seen.add(version.version)
            out.append(version)
            version = self.get(version.parent) if version.parent is not None else None
        return out[::-1]

    def next_version(self) -> int:
        numbers = [int(m.group(1)) for p in (self.folder.iterdir() if self.folder.is_dir() else [])
                   if (m := _VERSION_DIR.match(p.name))]
        return max(numbers, default=0) + 1

    # -- writes ------------------------------------------------------------
    def publish(self, staged: Path, meta: dict[str, Any]) -> AdapterVersion:
        """Make a complete adapter folder the next version and the current one.

        The folder gets its meta, is renamed into place whole, and only then is
        ``CURRENT`` rewritten: a crash at any point leaves the previous version
        current and usable."""
        for f in PEFT_FILES:
            if not (staged / f).is_file():
                raise ConfigError(f"{staged} is not a complete adapter (no {f})")
        version = self.next_version()
        meta = {**meta, "format": META_FORMAT, "namespace": self.namespace, "version": version}
        atomic_write_text(staged / META_FILE, json.dumps(meta, indent=1, sort_keys=True))
        target = self.version_dir(version)
        os.replace(staged, target)
        self.set_current(version)
        return AdapterVersion(version, target, meta)

    def set_current(self, version: int | None) -> None:
        """Point ``CURRENT`` at a version (``None``: no adapter)."""
        if version is not None:
            self.get(version)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / "CURRENT", json.dumps({"version": version}) + "\n")

    def export(self, dest: str | Path, version: int | None = None, *, with_data: bool = False) -> Path:
        """Copy a version (default: the current one) to ``dest`` as a plain peft
        folder (safetensors + adapter_config.json, with lifelong.json beside)."""
        v = self.get(version) if version is not None else self.current()
        if v is None:
            raise NotFoundError(f"namespace {self.namespace!r} has no adapter yet",
                                hint=f"make one with `lifelong consolidate --into-weights -n {self.namespace}`")
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            raise ConfigError(f"{dest} exists and is not empty", hint="export into a new folder")
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        ignore = None if with_data else shutil.ignore_patterns("data")
        shutil.copytree(v.path, tmp, ignore=ignore)
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
        return dest


def read_meta(folder: Path) -> dict[str, Any]:
    f = folder / META_FILE
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{f} cannot be read: {exc}", hint="the adapter folder is damaged") from exc
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise ConfigError(f"{f} is not a lifelong adapter description")
    return meta


def resolve_adapter(ref: str, root: str | Path | None = None) -> Path:
    """The folder an adapter reference names: ``NAMESPACE``, ``NAMESPACE@N`` or a path."""
    ref = ref.strip()
    if not ref:
        raise ConfigError("empty adapter reference", hint="adapter=NAMESPACE, NAMESPACE@N or a folder path")
    looks_like_path = "/" in ref or os.sep in ref or ref.startswith((".", "~"))
    if looks_like_path:
        folder = Path(ref).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise NotFoundError(f"no adapter at {folder}",
                                hint="give a folder with adapter_config.json (an export), or a namespace")
        return folder
    name, _, number = ref.partition("@")
    store = AdapterStore(name, root)
    if number:
        if not number.isdigit():
            raise ConfigError(f"adapter version {number!r} is not a number", hint="adapter=NAMESPACE@2")
        return store.get(int(number)).path
    current = store.current()
    if current is None:
        raise NotFoundError(f"namespace {name!r} has no adapter",
                            hint=f"make one with `lifelong consolidate --into-weights -n {name}`")
    return current.path


_BASE_KEYS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "head_dim")


def base_fingerprint(config: Any) -> str:
    """A short hash of a base model's architecture and sizes: an adapter fits only its base."""
    import hashlib

    fields = {k: getattr(config, k, None) for k in _BASE_KEYS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def check_base(meta: dict[str, Any], config: Any, folder: Path) -> None:
    """Refuse an adapter trained on another base model, before peft meets mismatched shapes."""
    from lifelong.errors import ModelError

    want = (meta.get("base") or {}).get("fingerprint")
    if want and want != base_fingerprint(config):
        raise ModelError(f"the adapter at {folder} was trained on {meta['base'].get('name', 'another model')}, "
                         "not on this model",
                         hint="load it with the base model it was trained on")
