"""The writer's training: the environment's reward and episode mechanics against
hand-computed values, and a tiny GRPO run that must raise its reward.

The readers are the tiny reader model (tiny_reader.py, a real transformers
model): with a note "The code of blue is X." in its context it answers X; with
no note it repeats the colour it was asked about. Its tokenizer is word-level,
so token counts are counted by hand below.
"""

from __future__ import annotations

import dataclasses
import json
import statistics

import pytest

from lifelong.context.session import REFLECTION_INSTRUCTIONS
from lifelong.errors import ConfigError
from lifelong.learn.onboarding import DriftingOnboarding, OnboardingFamily
from lifelong.learn.protocol import ProtocolConfig, writer_task
from lifelong.learn.suites import Suite, load_suite
from lifelong.learn.writer_env import WriterEnv, note_op
from lifelong.train.writer import (
    WriterReward,
    WriterTrainConfig,
    load_config,
    reward_curve,
    train_writer,
)

pytest.importorskip("trl")

CODES_TASKS = [
    {"id": "blue", "family": "codes", "prompt": "Question: What is the code of blue?", "answer": "tulip",
     "feedback": "The code of blue is tulip."},
    {"id": "red", "role": "dissimilar", "prompt": "Question: What is the code of red?", "answer": "red"},
]


@pytest.fixture
def codes(tmp_path):
    path = tmp_path / "codes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CODES_TASKS))
    return path


@pytest.fixture(scope="module")
def tiny_llm(tiny_dir):
    from lifelong.llm import load_llm

    llm = load_llm(f"hf:{tiny_dir}")
    yield llm
    llm.close()


def _env(tiny_llm, codes, tmp_path, **over):
    cfg = ProtocolConfig(episodes=2, readers=4, p_same=0.0, p_similar=0.5, p_dissimilar=0.5, max_tokens=4,
                         note_budget_tokens=60, **over)
    return WriterEnv(tiny_llm, lambda seed: load_suite(str(codes), seed), cfg, tmp_path / "env")


def test_states_carry_the_memory_and_the_prompt_is_the_sessions(tiny_llm, codes, tmp_path):
    env = _env(tiny_llm, codes, tmp_path)
    prompts = []

    def wrong_writer(prompt):  # a writer that notes a wrong code: what EDIT / DELETE are for
        prompts.append(prompt)
        return "The code of blue is maple.\nand more"

    states = env.roll(0, 2, writer=wrong_writer)
    assert [s.key for s in states] == ["0/0", "0/1"]
    assert [s.prompt for s in states] == prompts  # the writer is asked exactly the state's prompt
    assert states[0].notes_before == ""
    assert states[1].notes_before == "## Notes\n- [1] The code of blue is maple.\n"  # first line only
    # The tiny reader answers "blue" without a note (wrong), then gets the feedback.
    assert states[0].outcome.answer == "tulip" and states[0].outcome.feedback == ["The code of blue is tulip."]
    assert states[0].prompt.startswith(REFLECTION_INSTRUCTIONS)
    assert states[1].prompt.endswith(
        "Your task.\n## Notes\n- [1] The code of blue is maple.\n"
        "Task: Question: What is the code of blue?\nAnswer given: tulip\n"
        "Result: correct. Feedback: The code of blue is tulip.\nNote:")
    assert "Your task.\nTask:" in states[0].prompt  # no notes yet: no notes block


def test_reward_terms_by_hand(tiny_llm, codes, tmp_path):
    env = _env(tiny_llm, codes, tmp_path)
    state = env.roll(0, 2, writer=lambda p: "The code of blue is maple.")[1]
    # seed 0, episode 1, readers 0..3 with p_similar = p_dissimilar = 0.5: all four draw "dissimilar"
    assert [(rel, t.id) for rel, t in env.reader_tasks(state)] == [("dissimilar", "red")] * 4

    # NONE: the wrong note stays. Notes block "## Notes - [ 1 ] The code of blue is maple ." = 13
    # tokens; the reader prompt adds "## Task Question : What is the code of red ? Answer :" = 13.
    # The note pulls the reader off course: "maple" for red (score 0).
    none = env.score(state, "NONE")
    assert none["reader_answers"] == ["maple"] * 4
    assert (none["reader_score"], none["dissimilar"], none["similar"]) == (0.0, 0.0, None)
    assert (none["note_tokens"], none["context_tokens"]) == (13, 26.0)
    assert none["note_penalty"] == pytest.approx(0.0005 * 13)
    assert none["context_penalty"] == pytest.approx(0.0001 * 26)
    assert none["reward"] == pytest.approx(0.0 - 0.0065 - 0.0026)
    assert (none["op"], none["applied"]) == ("none", False)

    # DELETE 1: no notes, the reader answers "red": 1 − 0 − 0.0001·13.
    gone = env.score(state, "DELETE 1")
    assert gone["reader_answers"] == ["red"] * 4
    assert (gone["note_tokens"], gone["context_tokens"]) == (0, 13.0)
    assert gone["reward"] == pytest.approx(1.0 - 0.0013)
    assert (gone["op"], gone["applied"]) == ("delete", True)

    # EDIT 1: the note now says tulip (same length): readers of red say tulip, still wrong.
    edit = env.score(state, "EDIT 1: The code of blue is tulip.")
    assert edit["reader_answers"] == ["tulip"] * 4
    assert edit["reward"] == pytest.approx(-0.0091) and (edit["op"], edit["applied"]) == ("edit", True)
    # An edit of a note that does not exist changes nothing: the NONE reward.
    ghost = env.score(state, "EDIT 7: The code of blue is tulip.")
    assert (ghost["op"], ghost["applied"], ghost["reward"]) == ("edit", False, none["reward"])
    # Scoring never changes the state's memory: NONE again gives the same terms.
    again = env.score(state, "NONE")
    assert {k: again[k] for k in ("reward", "note_tokens", "reader_answers")} == \
        {k: none[k] for k in ("reward", "note_tokens", "reader_answers")}


def test_similar_readers_gain_from_the_right_note(tiny_llm, codes, tmp_path):
    env = _env(tiny_llm, codes, tmp_path, )
    env.config = dataclasses.replace(env.config, p_similar=1.0, p_dissimilar=0.0)
    state = env.roll(0, 1, writer=lambda p: "NONE")[0]
    assert {rel for rel, _ in env.reader_tasks(state)} == {"similar"}
    blank = env.score(state, "NONE")  # no note: the reader repeats the colour, 0
    right = env.score(state, "The code of blue is tulip.")  # 1 for every reader
    assert blank["reader_answers"] == ["blue"] * 4 and right["reader_answers"] == ["tulip"] * 4
    assert blank["reward"] == pytest.approx(0.0 - 0.0001 * 13)  # prompt "## Task Question : … Answer :"
    # 13 note tokens, 26 context tokens: 1 − 0.0065 − 0.0026
    assert right["reward"] == pytest.approx(1.0 - 0.0065 - 0.0026)
    assert right["similar"] == 1.0 and right["n_similar"] == 4


def test_note_op():
    assert [note_op(t) for t in ("NONE", "none.", "", "  \n", "EDIT 3: x", "delete [2]", "A fact.",
                                 "EDIT the note")] == \
        ["none", "none", "empty", "empty", "edit", "delete", "add", "add"]


def test_drifting_world_changes_one_convention_at_change_at():
    world = DriftingOnboarding(world_seed=3, change_at=2)
    base = OnboardingFamily(world_seed=3)
    assert world.conventions == base.conventions  # the same organisation until the change
    before, after = world.at(1).conventions, world.at(2).conventions
    assert before == base.conventions
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 1
    old, new = changed[0]
    assert old.key == new.key and old.answer != new.answer and " now " in new.statement
    assert new.answer in new.statement and old.answer not in new.statement
    assert world.at(5).conventions == after  # and it stays changed
    # The protocol asks the world for each episode: a writer task after the change sees the new fact.
    suite = Suite("drift", [world])
    for episode in range(12):
        family, task = writer_task(suite, 7, episode)
        facts = {c.key: c for c in family.conventions}
        assert task.metadata["answer"] == facts[task.metadata["fact"]].answer
        assert (facts[new.key].answer == new.answer) == (episode >= 2)
    assert load_suite("onboarding-drift", 3).families[0].change_at == 10


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    for text, words in [
        ("[grpo]\nstepz = 3\n", "unknown key 'stepz'"),
        ("[optimizer]\nlr = 1\n", "unknown section"),
        ("[grpo]\nsteps = 'many'\n", "wrong type"),
        ("[world]\ntrain_seeds = [1, 2]\neval_seeds = [2]\n", "both"),
        ("[protocol]\np_same = 0.5\n", "sum to 1"),
        ("[protocol]\nreward = 'vibes'\n", "unknown reward"),
        ("[grpo]\nnum_generations = 1\n", "at least 2"),
        ("[policy]\nmodel = 'local'\n", "transformers model"),
        ("[grpo\n", "not valid TOML"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=words):
            load_config(bad)
    good = tmp_path / "good.toml"
    good.write_text("[grpo]\nsteps = 3\nlearning_rate = 1\n[world]\nchange_at = 2\n")
    cfg = load_config(good)
    assert (cfg.steps, cfg.learning_rate, cfg.change_at) == (3, 1.0, 2)


def test_committed_configs_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs" / "learn"
    small, gpu = load_config(root / "writer-small.toml"), load_config(root / "writer-gpu.toml")
    assert small.reward == gpu.reward == "protocol" and small.suite == "onboarding-drift"
    assert not set(small.train_seeds) & set(small.eval_seeds)
    lab = load_suite(str(root / "lab.jsonl"))
    assert len(lab.families[0].tasks) == 12 and len(lab.dissimilar.tasks) == 6


def test_reward_function_logs_every_term(tmp_path):
    class Env:
        def score(self, state, completion):
            return {"reward": 0.5 if completion == "a" else 0.25, "similar": 1.0, "note_tokens": 10,
                    "op": note_op(completion)}

    @dataclasses.dataclass
    class State:
        key: str

    log = tmp_path / "r.jsonl"
    metrics = []
    fn = WriterReward(Env(), [State("0/0"), State("0/1")], "protocol", log)
    step = type("S", (), {"global_step": 3})()
    out = fn(["p", "p"], ["a", "NONE"], state=[0, 1], trainer_state=step,
             log_metric=lambda k, v: metrics.append((k, v)))
    assert out == [0.5, 0.25]
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(r["step"], r["state"], r["op"], r["reward"]) for r in rows] == [(3, "0/0", "add", 0.5),
                                                                            (3, "0/1", "none", 0.25)]
    assert ("protocol/note_tokens", 10.0) in metrics and ("ops/none", 0.5) in metrics
    curve = reward_curve(rows)
    assert curve == [{"step": 3, "n": 2, "reward": 0.375, "reader_score": None, "same": None, "similar": 1.0,
                      "dissimilar": None, "note_tokens": 10.0, "context_tokens": None, "note_penalty": None,
                      "context_penalty": None, "add": 1, "edit": 0, "delete": 0, "none": 1, "empty": 0}]


def random_policy(reader_dir, dest, seed=1, init=0.3):
    """A randomly initialised model with the tiny reader's shape and word vocabulary. (A
    larger init than the default 0.02: with tiny frozen embeddings the logits are
    near-uniform whatever a LoRA adapter does in the layers.)"""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = AutoConfig.from_pretrained(reader_dir)
    cfg.initializer_range = init
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(reader_dir).save_pretrained(dest)
    return dest


def test_tiny_grpo_run_raises_the_reward_and_resumes(tiny_dir, codes, tmp_path):
    """A randomly initialised tiny policy (word vocabulary of ~40) learns to write the
    fact: reward 1 when the note contains the code its task needed ("fact" reward).
    Its first ten steps write it in under a fifth of the completions."""
    policy = random_policy(tiny_dir, tmp_path / "policy")
    cfg = WriterTrainConfig(policy=f"hf:{policy}", readers_model=f"hf:{tiny_dir}", suite=str(codes),
                            change_at=None, train_seeds=[0], eval_seeds=[], episodes=2, reward="fact",
                            readers=1, steps=30, num_generations=8, learning_rate=3e-2,
                            max_completion_length=6, save_steps=15, note_budget_tokens=60)
    out = tmp_path / "out"
    summary = train_writer(cfg, out, resume=False)
    curve = json.loads((out / "curve.json").read_text())
    assert [p["step"] for p in curve] == list(range(30)) and all(p["n"] == 8 for p in curve)
    first = statistics.fmean(p["reward"] for p in curve[:10])
    last = statistics.fmean(p["reward"] for p in curve[-10:])
    assert first <= 0.2 and last >= 0.8, (first, last)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not list((out / "adapter").glob("*.bin"))  # safetensors and JSON only
    assert (out / "checkpoints" / "checkpoint-30" / "adapter_model.safetensors").is_file()
    assert (out / "reward.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["states"] == 2 and summary["last"]["step"] == 29
    # Resume: six more steps start from checkpoint 30, and the log keeps steps 0..35 once each,
    # also when an interrupted run had logged steps past the checkpoint (dropped: they are redone).
    with (out / "rewards.jsonl").open("a") as f:
        for step in (30, 30, 31):
            f.write(json.dumps({"step": step, "state": "0/0", "reward": 9.0, "op": "add"}) + "\n")
    train_writer(dataclasses.replace(cfg, steps=36), out)
    steps = [json.loads(x)["step"] for x in (out / "rewards.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == list(range(36)) and len(steps) == 36 * 8
    assert max(p["reward"] for p in json.loads((out / "curve.json").read_text())) <= 1.0
    assert (out / "checkpoints" / "checkpoint-36").is_dir()
    # Another configuration in the same folder is refused.
    with pytest.raises(ConfigError, match="learning_rate"):
        train_writer(dataclasses.replace(cfg, learning_rate=1e-3), out)
    # The trained writer is a model spec.
    from lifelong.llm import load_llm

    writer = load_llm(f"hf:{policy}?adapter={out / 'adapter'}")
    try:
        assert "+lora:" in writer.name
    finally:
        writer.close()


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    import io
    import sys

    import torch

    from lifelong.cli.main import main

    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path / "home"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def run(*args: str, ok: bool = True) -> tuple[str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out, err = capsys.readouterr()
        assert ((exit_.value.code or 0) == 0) == ok, out + err
        return out, " ".join(err.split())

    yield run
    torch.set_num_threads(threads)


def test_train_writer_and_eval_with_the_trained_writer_from_the_shell(cli, tiny_dir, codes, tmp_path):
    policy = random_policy(tiny_dir, tmp_path / "policy")
    config = tmp_path / "tiny.toml"
    config.write_text(f"""
[policy]
model = "hf:{policy}"
[readers]
model = "hf:{tiny_dir}"
[world]
suite = "{codes}"
train_seeds = [0]
eval_seeds = [1]
episodes = 2
[protocol]
reward = "protocol"
readers = 1
note_budget_tokens = 60
max_tokens = 4
[grpo]
steps = 2
num_generations = 2
max_completion_length = 6
save_steps = 1
""")
    out_dir = tmp_path / "trained"
    out, err = cli("learn", "train-writer", str(config), "--out", str(out_dir))
    assert "rolling world 0" in err and "step 2/2 reward=" in err
    last = out.strip().splitlines()[-1]
    assert last.startswith("reward first=") and f"adapter={out_dir / 'adapter'}" in last
    rows = [json.loads(x) for x in (out_dir / "rewards.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {"reward", "similar", "note_tokens", "context_tokens", "op"} <= set(rows[0])
    # Finished: a rerun resumes at step 2 and has nothing left to do; --steps extends it.
    cli("learn", "train-writer", str(config), "--out", str(out_dir), "--steps", "3")
    assert len((out_dir / "rewards.jsonl").read_text().splitlines()) == 6

    spec = f"hf:{policy}?adapter={out_dir / 'adapter'}"
    eval_dir = tmp_path / "eval"
    out, _ = cli("learn", "eval", "--suite", str(codes), "-m", f"hf:{tiny_dir}", "--writer", spec,
                 "--strategy", "notes", "--episodes", "1", "--readers", "1", "--max-tokens", "4",
                 "--note-budget", "60", "--out", str(eval_dir))
    assert out.strip().splitlines()[-1].startswith("reward=")
    header = json.loads((eval_dir / "notes" / "sessions.jsonl").read_text().splitlines()[0])
    assert header["model"] == tiny_dir.name and "+lora:" in header["writer"]

    bad = tmp_path / "bad.toml"
    bad.write_text("[grpo]\nsteps = 0\n")
    out, err = cli("learn", "train-writer", str(bad), "--out", str(tmp_path / "x"), ok=False)
    assert "steps must be at least 1" in out + err and "Traceback" not in out + err
