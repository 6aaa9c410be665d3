"""Tasks, checkers and suites: worlds are seeded, checkers strict about the fact only."""

from __future__ import annotations

import json
import random

import pytest

from lifelong.errors import ConfigError, ValidationError
from lifelong.learn.dissimilar import CAPITALS, OPPOSITES, DissimilarPool
from lifelong.learn.onboarding import OnboardingFamily
from lifelong.learn.procedure import MOVES, ProcedureFamily
from lifelong.learn.suites import Suite, load_jsonl_suite, load_suite, register_suite, suite_names
from lifelong.task import Task, answer_line, expect_choice, expect_number, expect_text


def test_answer_line_reads_first_line_without_label():
    assert answer_line("\n  Answer: ZQX.\nQuestion: next?") == "ZQX."
    assert answer_line("") == ""


@pytest.mark.parametrize(
    ("answer", "score"),
    [(" ZQX.", 1.0), ("The prefix is zqx", 1.0), ("ZQX-1234", 1.0), ("ZQXY", 0.0),
     ("I do not know\nZQX", 0.0), ("QZX", 0.0)],
)
def test_expect_text_whole_words_first_line(answer, score):
    assert expect_text("ZQX")(answer) == score


def test_expect_text_paths_and_alternatives():
    check = expect_text("/srv/velo/ops-incident/")
    assert check("Saved in /srv/velo/ops-incident.") == 1.0
    assert check("/srv/velo/ops-incident/2024") == 0.0
    owner = expect_text("Mira Tanaka", "Tanaka")
    assert owner("Tanaka owns it") == 1.0 and owner("Mira") == 0.0


def test_expect_choice_first_named_option_counts():
    check = expect_choice("burn", MOVES)
    assert check("Burn.") == 1.0
    assert check("burn, not flip") == 1.0
    assert check("flip, hold, swap, pass, burn") == 0.0  # listing every move is not an answer
    assert check("nothing") == 0.0
    with pytest.raises(ValueError):
        expect_choice("jump", MOVES)


def test_expect_number_takes_last_number_of_first_line():
    check = expect_number(9)
    assert check(" 6 + 3 = 9\nQuestion: What is 6 + 4?") == 1.0
    assert check("6 + 3 = 11") == 0.0
    assert check("nine") == 0.0


def test_task_score_clips_and_none_without_checker():
    assert Task("p", check=lambda a: 3.0).score("x") == 1.0
    assert Task("p", check=lambda a: -1.0).score("x") == 0.0
    assert Task("p").score("x") is None


@pytest.mark.parametrize("family_cls", [OnboardingFamily, ProcedureFamily])
def test_family_world_fixed_by_seed_and_tasks_self_consistent(family_cls):
    a, b, other = family_cls(world_seed=3), family_cls(world_seed=3), family_cls(world_seed=4)
    ta = [a.sample(random.Random(i)) for i in range(40)]
    tb = [b.sample(random.Random(i)) for i in range(40)]
    assert [t.prompt for t in ta] == [t.prompt for t in tb]
    assert [t.id for t in ta] == [t.id for t in tb]
    to = [other.sample(random.Random(i)) for i in range(40)]
    assert {t.metadata["answer"] for t in ta} != {t.metadata["answer"] for t in to}
    for t in ta:
        assert t.prompt.endswith("Answer:")
        assert t.score(t.metadata["answer"]) == 1.0
        assert t.score("I do not know") == 0.0
        assert t.feedback(t.metadata["answer"], 1.0) is None
        said = t.feedback("I do not know", 0.0)
        assert t.metadata["statement"] in said  # feedback reveals what was needed
        assert t.max_attempts == 2
        for text in t.environment.values():
            assert t.score(t.metadata["answer"]) == 1.0 and text.strip()
    # Distinct similar tasks share hidden knowledge: several draws need the same fact.
    facts = [t.metadata.get("fact") or t.metadata.get("rule") for t in ta]
    assert len(set(facts)) < len(facts)
    assert len({t.id for t in ta}) > len(set(facts))


def test_onboarding_environment_states_the_fact_when_present():
    fam = OnboardingFamily(world_seed=1, env_prob=1.0)
    t = fam.sample(random.Random(0))
    (text,) = t.environment.values()
    assert t.metadata["statement"] in text


def test_procedure_pitfalls_contradict_the_plain_rule_and_are_not_in_the_rulebook():
    fam = ProcedureFamily(world_seed=2)
    plain = {r.key: r for r in fam.rules if not r.pitfall}
    pitfalls = [r for r in fam.rules if r.pitfall]
    assert len(pitfalls) == 2
    for r in pitfalls:
        base = plain[r.key.split("-")[0]]
        assert r.move != base.move
        assert fam.statement(r) not in fam.rulebook()


def test_dissimilar_pool_answers_are_right():
    pool = DissimilarPool()
    rng = random.Random(0)
    kinds = set()
    for _ in range(80):
        t = pool.sample(rng)
        kinds.add(t.metadata["kind"])
        key = t.metadata["key"]
        if t.metadata["kind"] == "arithmetic":
            a, b = map(int, key.split("+"))
            assert t.score(f"{a} + {b} = {a + b}") == 1.0
        elif t.metadata["kind"] == "opposite":
            assert t.score(OPPOSITES[key]) == 1.0
        elif t.metadata["kind"] == "capital":
            assert t.score(f"The capital is {CAPITALS[key]}.") == 1.0
        assert t.score("I do not know") == 0.0
        assert t.max_attempts == 1 and not t.environment
    assert kinds == {"arithmetic", "opposite", "capital", "colour"}


def test_builtin_suites_and_unknown_suite():
    assert {"onboarding", "procedure", "mixed"} <= set(suite_names())
    assert len(load_suite("mixed", 0).families) == 2
    with pytest.raises(ConfigError, match="unknown suite 'nope'"):
        load_suite("nope")


def test_register_suite_in_python(monkeypatch):
    from lifelong.learn import suites

    monkeypatch.setattr(suites, "_SUITES", dict(suites._SUITES))
    register_suite("tiny-test", lambda seed: Suite("tiny-test", [OnboardingFamily(world_seed=seed + 100)]))
    suite = load_suite("tiny-test", 1)
    assert suite.families[0].world_seed == 101


def _write(tmp_path, lines):
    path = tmp_path / "acme.jsonl"
    path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n")
    return path


def test_jsonl_suite_loads_every_check_kind(tmp_path):
    path = _write(tmp_path, [
        {"id": "t1", "prompt": "Which prefix? Answer:", "answer": "ZQX", "feedback": "Prefix is ZQX.",
         "environment": {"handbook.md": "Prefix ZQX."}},
        {"id": "t2", "prompt": "Move? Answer:", "answer": "burn", "check": "choice", "options": ["flip", "burn"]},
        {"id": "t3", "prompt": "2+2? Answer:", "answer": 4, "check": "number", "family": "acme-math"},
        {"id": "t4", "prompt": "Code? Answer:", "answer": "^Q-\\d+$", "check": "regex"},
        {"id": "t5", "prompt": "Lang? Answer:", "answer": "German", "check": "exact", "alternatives": ["Deutsch"]},
        {"id": "d1", "prompt": "Opposite of up? Answer:", "answer": "down", "role": "dissimilar"},
        "",
    ])
    suite = load_jsonl_suite(path)
    assert suite.name == "acme"
    assert sorted(f.name for f in suite.families) == ["acme", "acme-math"]
    tasks = {t.id: t for f in suite.families for t in f.tasks}
    assert tasks["t1"].score("ZQX") == 1.0 and tasks["t1"].max_attempts == 2
    assert tasks["t1"].feedback("no", 0.0) == "Prefix is ZQX." and tasks["t1"].feedback("ZQX", 1.0) is None
    assert tasks["t1"].environment == {"handbook.md": "Prefix ZQX."}
    assert tasks["t2"].score("burn") == 1.0 and tasks["t2"].score("flip or burn") == 0.0
    assert tasks["t3"].score("2 + 2 = 4") == 1.0 and tasks["t3"].max_attempts == 1
    assert tasks["t4"].score("Q-77") == 1.0 and tasks["t4"].score("Q-77 or so") == 0.0
    assert tasks["t5"].score("deutsch.") == 1.0 and tasks["t5"].score("German, of course") == 0.0
    assert suite.dissimilar.tasks[0].id == "d1"
    assert load_suite(str(path)).name == "acme"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"acme.jsonl:2: not valid JSON"),
        ({"id": "x1", "answer": "A"}, r"acme.jsonl:2 \(task 'x1'\): 'prompt' must be"),
        ({"id": "x2", "prompt": "P", "answer": "A", "check": "fuzzy"}, r"task 'x2'.*'check' must be one of"),
        ({"id": "x3", "prompt": "P", "answer": "z", "check": "choice", "options": ["a"]}, r"task 'x3'.*not one of"),
        ({"id": "x4", "prompt": "P", "answer": "A", "colour": "red"}, r"task 'x4'.*unknown field"),
        ({"id": "x5", "prompt": "P", "answer": "(", "check": "regex"}, r"task 'x5'.*regular expression"),
        ({"id": "ok", "prompt": "P", "answer": "A"}, r"duplicate task id 'ok'"),
    ],
)
def test_jsonl_malformed_task_names_line_and_task(tmp_path, line, message):
    path = _write(tmp_path, [{"id": "ok", "prompt": "P", "answer": "A"}, line])
    with pytest.raises(ValidationError, match=message):
        load_jsonl_suite(path)


def test_jsonl_without_tasks_or_missing_file(tmp_path):
    path = _write(tmp_path, [{"prompt": "P", "answer": "A", "role": "dissimilar"}])
    with pytest.raises(ValidationError, match="no tasks with role 'task'"):
        load_jsonl_suite(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_jsonl_suite(tmp_path / "missing.jsonl")


def test_documented_example_loads(tmp_path):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "tasks-format.md").read_text()
    block = doc.split("```json\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "acme.jsonl"
    path.write_text(block)
    suite = load_jsonl_suite(path)
    assert sorted(f.name for f in suite.families) == ["acme", "acme-game"]
    tasks = {t.id: t for f in suite.families for t in f.tasks}
    assert tasks["acme-owner-1"].score("Tanaka.") == 1.0
    assert tasks["acme-move-1"].score("burn") == 1.0
    assert suite.dissimilar.tasks[0].score("4 + 5 = 9") == 1.0
