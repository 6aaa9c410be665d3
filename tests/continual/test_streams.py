"""The continual-learning streams: reproducible from a seed, solvable from their material
(checked by independent solvers that read only the material's text), scored as documented."""

from __future__ import annotations

import re

import pytest

from lifelong.data import classinc, novel_lang
from lifelong.data.registry import STREAMS, get_stream
from lifelong.errors import ConfigError

SEEDS = range(40)


def _snapshot(tasks) -> list:
    return [(t.name, t.material, [(q.prompt, q.reference) for q in t.queries],
             [(q.prompt, q.reference) for q in t.practice]) for t in tasks]


@pytest.mark.parametrize("stream", STREAMS)
def test_a_seed_gives_the_same_stream_and_another_seed_another(stream: str) -> None:
    a, b, c = get_stream(stream, 3), get_stream(stream, 3), get_stream(stream, 4)
    assert _snapshot(a) == _snapshot(b)
    assert _snapshot(a) != _snapshot(c)


# --------------------------------------------------------------------------- translation


@pytest.mark.parametrize("script", ["latin", "cipher"])
def test_every_test_sentence_is_translatable_from_the_material_alone(script: str) -> None:
    for seed in SEEDS:
        for task in get_stream("novel_translation", seed, languages=2, script=script):
            for q in task.queries + task.practice:
                assert novel_lang.solve(task.material, q.meta["source"]) == q.reference, (seed, task.name)


def test_the_solver_needs_the_material() -> None:
    a, b = get_stream("novel_translation", 0)
    src = a.queries[0].meta["source"]
    with pytest.raises(ValueError):
        novel_lang.solve(b.material, src)  # B's dictionary does not know A's words
    no_grammar = a.material.split("Grammar of")[0]
    with pytest.raises(ValueError):
        novel_lang.solve(no_grammar, src)


def test_languages_differ_in_words_and_test_sentences_are_not_in_the_material() -> None:
    for seed in range(10):
        a, b = get_stream("novel_translation", seed)
        words = [set(re.findall(r"^(\S+) = ", t.material, re.M)) for t in (a, b)]
        assert words[0] and words[1] and not words[0] & words[1]
        for t in (a, b):
            parallel = {q.meta["source"] for q in t.practice}
            assert not parallel & {q.meta["source"] for q in t.queries}
            assert len({q.meta["source"] for q in t.queries}) == len(t.queries)
            assert t.meta["order"] != "SVO"


def test_the_cipher_hides_the_latin_letters() -> None:
    t = get_stream("novel_translation", 1, script="cipher")[0]
    for q in t.queries:
        assert not re.search(r"[a-z]", q.meta["source"]), q.meta["source"]


def test_english_forms_follow_number_and_tense() -> None:
    lang = novel_lang.make_language(0)
    noun = sorted(lang.nouns)[0]
    verb = "see" if "see" in lang.verbs else sorted(lang.verbs)[0]
    s3, past = novel_lang._VERB_FORMS[verb]
    one = novel_lang.Sentence((None, noun, False), verb, False, ("big", "king", True))
    many = novel_lang.Sentence((None, noun, True), verb, False, (None, "king", False))
    before = novel_lang.Sentence((None, noun, True), verb, True, (None, "king", False))
    assert novel_lang.to_english(one) == f"the {noun} {s3} the big kings."
    assert novel_lang.to_english(many).split()[2] == verb
    assert novel_lang.to_english(before).split()[2] == past


def test_chrf_reads_the_first_line_lower_cased() -> None:
    import sacrebleu

    ref = "the old hunter saw the mice."
    assert novel_lang.chrf(["The old  Hunter saw the mice.\nand then more"], [ref]) == pytest.approx(100.0)
    assert novel_lang.chrf(["", "\n\n"], [ref, ref]) == 0.0
    hyps, refs = ["the old hunter", "a dog saw the mice."], [ref, "the dog saw the mice."]
    expected = sacrebleu.corpus_chrf(hyps, [refs]).score
    assert novel_lang.chrf(hyps, refs) == pytest.approx(expected, abs=1e-12)
    assert 0.0 < expected < 100.0
    with pytest.raises(ConfigError):
        novel_lang.chrf(["a"], [])


def test_bad_language_sizes_are_clear_errors() -> None:
    for opts in ({"nouns": 1}, {"nouns": 999}, {"script": "runes"}, {"test": 0}, {"colour": 3}):
        with pytest.raises(ConfigError):
            get_stream("novel_translation", 0, **opts)
    with pytest.raises(ConfigError, match="too small"):
        get_stream("novel_translation", 0, nouns=2, verbs=2, adjectives=2, parallel=200, test=200)


# --------------------------------------------------------------------------- class-incremental


def test_every_test_request_is_labelled_consistently() -> None:
    for seed in SEEDS:
        tasks = get_stream("class_incremental", seed)
        materials = [t.material for t in tasks]
        for t in tasks:
            for q in t.queries:
                request = q.prompt.split("\n")[0].removeprefix("Request: ")
                assert classinc.solve(materials, request) == [q.reference], (seed, request)


def test_topics_keywords_and_templates_do_not_overlap() -> None:
    owner: dict[str, str] = {}
    for topic, kws in classinc.TOPICS.items():
        assert len(set(kws)) == 6
        for w in kws:
            assert w not in owner, (w, topic, owner.get(w))
            owner[w] = topic
    template_words = {w for t in classinc.TRAIN_TEMPLATES + classinc.TEST_TEMPLATES for w in t.split()}
    assert not template_words & set(owner)


def test_a_stream_has_new_classes_in_each_task_and_labels_that_are_not_words() -> None:
    tasks = get_stream("class_incremental", 7, tasks=4, classes=3, test=5)
    labels = [set(t.meta["labels"]) for t in tasks]
    assert all(len(s) == 3 for s in labels)
    assert len(set().union(*labels)) == 12
    for t, s in zip(tasks, labels):
        assert {q.reference for q in t.queries} == s
        assert len(t.queries) == 15 and len(t.practice) == 9
        assert all(re.fullmatch(r"[a-z]{5}", x) for x in s)


def test_accuracy_reads_the_first_word() -> None:
    refs = ["vomek", "tasin", "lurok"]
    assert classinc.accuracy(["Vomek.", "\n tasin because", "vomeks"], refs) == pytest.approx(2 / 3)
    assert classinc.accuracy([], []) == 0.0


def test_too_many_classes_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="topics"):
        get_stream("class_incremental", 0, tasks=10, classes=10)
    with pytest.raises(ConfigError):
        get_stream("no_such_stream", 0)
