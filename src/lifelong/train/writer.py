"""Train the memory writer with reinforcement learning on the protocol's reward.

The seed *Prosaic continual learning*: "when finishing a task … have the model
write memories and documentation, then run a new instance on the same,
similar, and dissimilar tasks with those memories, and have a reward function
which scores on the combined performance (with some small penalty for the
length of the memories)".

- **Policy**: a causal LM through transformers (``hf:local``: the embedded
  Gemma, dequantized) with a LoRA adapter (peft); only the adapter trains.
- **Prompt**: the note prompt a session sends after a task
  (``Session.note_prompt``), for states of sequential runs on one memory
  (``lifelong.learn.writer_env``): the notes written so far, with ids, are in
  the prompt, so the policy can learn to ``EDIT`` or ``DELETE`` them; in
  ``onboarding-drift`` worlds a convention changes mid-run and the notes about
  it go stale.
- **Completion**: the note line (a note, ``EDIT id: …``, ``DELETE id`` or
  ``NONE``), ended by a newline as a session's reflection is.
- **Reward**: ``WriterEnv.score``: the completion applied to the state's memory
  as a session applies it, the episode's readers (same / similar /
  dissimilar, the protocol's draws) run on the frozen model, and
  reward = aggregate(reader scores) − λ·note tokens − μ·context tokens. Every
  term of every completion goes to ``rewards.jsonl``.
- **Algorithm**: TRL's GRPO (group-relative advantages over
  ``num_generations`` completions of one prompt; Shao et al. 2024, eq. 3 with
  the loss TRL's ``loss_type`` names), checkpoints and resume by the
  transformers ``Trainer``.

``reward = "fact"`` swaps the protocol's reward for a cheap proxy — 1 when the
note states the answer the writer's task needed, else 0 — for smoke runs and
tests on tiny models, where real readers cannot tell notes apart.

The adapter checkpoints (``checkpoints/checkpoint-N``) and the final adapter
(``adapter/``) are plain peft folders: ``-m 'hf:local?adapter=OUT/adapter'``
puts the trained writer to work, e.g. ``lifelong learn eval --writer …``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.atomic import atomic_write_bytes, atomic_write_text
from lifelong.errors import ConfigError

log = logging.getLogger(__name__)

REWARD_TERMS = ("reward", "reader_score", "same", "similar", "dissimilar", "note_tokens", "context_tokens",
                "note_penalty", "context_penalty")
OPS = ("add", "edit", "delete", "none", "empty")


@dataclass
class WriterTrainConfig:
    """What ``lifelong learn train-writer CONFIG`` reads (TOML; sections in brackets)."""

    # [policy]
    policy: str = "hf:local"  # hf:PATH (a model folder, a .gguf, or local)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # [readers]
    readers_model: str = "local?ctx=2048&threads=1"  # frozen: the writer's task work and the readers
    # [world]
    suite: str = "onboarding-drift"
    train_seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    eval_seeds: list[int] = field(default_factory=lambda: [100, 101])
    episodes: int = 8  # K sequential episodes on one memory per world
    change_at: int | None = 4  # onboarding-drift: the episode the convention changes
    # [protocol]
    reward: str = "protocol"  # "protocol" | "fact"
    readers: int = 4
    p_same: float = 0.01
    p_similar: float = 0.89
    p_dissimilar: float = 0.10
    note_penalty: float = 0.0005
    context_penalty: float = 0.0001
    aggregate: str = "mean"
    max_tokens: int = 16
    note_budget_tokens: int = 400
    # [grpo]
    steps: int = 40
    num_generations: int = 4
    prompts_per_step: int = 1
    learning_rate: float = 2e-5
    temperature: float = 1.0
    max_completion_length: int = 32
    beta: float = 0.0
    loss_type: str = "dapo"
    save_steps: int = 10
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.reward not in ("protocol", "fact"):
            raise ConfigError(f"unknown reward {self.reward!r}", hint="use 'protocol' or 'fact'")
        for name in ("steps", "num_generations", "prompts_per_step", "episodes", "readers", "save_steps",
                     "threads", "lora_r", "max_completion_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.num_generations < 2:
            raise ConfigError("num_generations must be at least 2", hint="GRPO compares completions of one prompt")
        if not self.train_seeds:
            raise ConfigError("train_seeds is empty", hint="give the world seeds to train on")
        if set(self.train_seeds) & set(self.eval_seeds):
            raise ConfigError(f"seeds {sorted(set(self.train_seeds) & set(self.eval_seeds))} are in both "
                              "train_seeds and eval_seeds", hint="evaluation worlds must be held out")
        if not self.policy.startswith("hf:"):
            raise ConfigError(f"the policy must be a transformers model (hf:…), not {self.policy!r}",
                              hint="e.g. policy = 'hf:local'")
        self.protocol_config()  # checks the probabilities and the aggregate

    def protocol_config(self) -> Any:
        from lifelong.learn.protocol import ProtocolConfig

        return ProtocolConfig(episodes=self.episodes, readers=self.readers, p_same=self.p_same,
                              p_similar=self.p_similar, p_dissimilar=self.p_dissimilar,
                              note_penalty=self.note_penalty, context_penalty=self.context_penalty,
                              aggregate=self.aggregate, max_tokens=self.max_tokens,
                              reflection_max_tokens=self.max_completion_length,
                              note_budget_tokens=self.note_budget_tokens)

    def suite_for(self, seed: int) -> Any:
        from lifelong.learn.onboarding import DriftingOnboarding
        from lifelong.learn.suites import Suite, load_suite

        if self.suite == "onboarding-drift" and self.change_at is not None:
            return Suite("onboarding-drift", [DriftingOnboarding(world_seed=seed, change_at=self.change_at)])
        return load_suite(self.suite, seed)


_SECTIONS = {
    "policy": {"model": "policy", "lora_r": "lora_r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
               "target_modules": "target_modules"},
    "readers": {"model": "readers_model"},
    "world": {"suite": "suite", "train_seeds": "train_seeds", "eval_seeds": "eval_seeds", "episodes": "episodes",
              "change_at": "change_at"},
    "protocol": {k: k for k in ("reward", "readers", "p_same", "p_similar", "p_dissimilar", "note_penalty",
                                "context_penalty", "aggregate", "max_tokens", "note_budget_tokens")},
    "grpo": {k: k for k in ("steps", "num_generations", "prompts_per_step", "learning_rate", "temperature",
                            "max_completion_length", "beta", "loss_type", "save_steps", "seed", "threads")},
}


def load_config(path: str | Path) -> WriterTrainConfig:
    """Read a train-writer TOML file; unknown sections or keys and wrong types are errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", hint="give a TOML file, e.g. configs/learn/…")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    kwargs: dict[str, Any] = {}
    types = {f.name: f.type for f in dataclasses.fields(WriterTrainConfig)}
    defaults = WriterTrainConfig.__dataclass_fields__
    for section, values in data.items():
        if section not in _SECTIONS or not isinstance(values, dict):
            raise ConfigError(f"{path}: unknown section [{section}]", hint=f"sections: {', '.join(_SECTIONS)}")
        for key, value in values.items():
            if key not in _SECTIONS[section]:
                raise ConfigError(f"{path}: unknown key {key!r} in [{section}]",
                                  hint=f"keys: {', '.join(_SECTIONS[section])}")
            name = _SECTIONS[section][key]
            default = defaults[name].default
            if default is dataclasses.MISSING:
                default = defaults[name].default_factory()  # type: ignore[misc]
            if not _type_ok(value, default, str(types[name])):
                raise ConfigError(f"{path}: [{section}] {key} = {value!r} has the wrong type",
                                  hint=f"expected {types[name]}")
            kwargs[name] = float(value) if isinstance(default, float) and isinstance(value, int) else value
    return WriterTrainConfig(**kwargs)


def _type_ok(value: Any, default: Any, annotation: str) -> bool:
    if isinstance(value, bool) != isinstance(default, bool):
        return False
    if default is None:  # int | None
        return isinstance(value, int)
    if isinstance(default, list):
        inner = int if "int" in annotation else str
        return isinstance(value, list) and all(isinstance(v, inner) and not isinstance(v, bool) for v in value)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


# --- The reward function (what GRPO calls) ----------------------------------------------


class WriterReward:
    """TRL reward function: the protocol's reward of each completion for its state.

    Appends one line per completion to ``log_path`` (step, state, completion,
    op, every term) and reports the mean of each term to the trainer's log.
    """

    __name__ = "protocol_reward"

    def __init__(self, env: Any, states: list[Any], kind: str, log_path: Path) -> None:
        self.env, self.states, self.kind, self.log_path = env, states, kind, log_path
        self.__name__ = f"{kind}_reward"

    def score(self, state: Any, completion: str) -> dict[str, Any]:
        if self.kind == "fact":
            from lifelong.learn.writer_env import note_op

            answer = str(state.task.metadata.get("answer", "")).lower()
            line = next((ln.strip() for ln in completion.splitlines() if ln.strip()), "")
            hit = bool(answer) and answer in line.lower()
            return {"reward": 1.0 if hit else 0.0, "op": note_op(completion), "note": line[:300]}
        return self.env.score(state, completion)

    def __call__(self, prompts: list[str], completions: list[str], state: list[int], trainer_state: Any = None,
                 log_metric: Callable[[str, float], None] | None = None, **_: Any) -> list[float]:
        step = int(getattr(trainer_state, "global_step", 0) or 0)
        rows, rewards = [], []
        for completion, index in zip(completions, state, strict=True):
            text = completion if isinstance(completion, str) else str(completion)
            record = self.score(self.states[index], text)
            rewards.append(float(record["reward"]))
            rows.append({"step": step, "state": self.states[index].key, "completion": text, **record})
        with self.log_path.open("a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
        if log_metric is not None:
            for term in REWARD_TERMS[1:]:
                values = [r[term] for r in rows if r.get(term) is not None]
                if values:
                    log_metric(f"protocol/{term}", statistics.fmean(values))
            for op in OPS:
                log_metric(f"ops/{op}", sum(r["op"] == op for r in rows) / len(rows))
        return rewards


# --- Training ---------------------------------------------------------------------------


def policy_folder(spec: str) -> Path:
    """The transformers folder of an ``hf:`` policy spec (a .gguf is converted once, cached)."""
    from lifelong.llm.hf import model_folder

    target = spec.removeprefix("hf:").split("?", 1)[0]
    return model_folder(target)


def latest_checkpoint(folder: Path) -> Path | None:
    steps = [(int(p.name.split("-")[-1]), p) for p in folder.glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(steps)[1] if steps else None


def read_rewards(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return rows


def reward_curve(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per step: mean reward and reader terms over its completions, and the ops' counts."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_step.setdefault(int(r["step"]), []).append(r)
    curve = []
    for step in sorted(by_step):
        group = by_step[step]
        point: dict[str, Any] = {"step": step, "n": len(group)}
        for term in REWARD_TERMS:
            values = [r[term] for r in group if r.get(term) is not None]
            point[term] = round(statistics.fmean(values), 6) if values else None
        for op in OPS:
            point[op] = sum(r.get("op") == op for r in group)
        curve.append(point)
    return curve


def plot_curve(curve: list[dict[str, Any]], title: str) -> bytes:
    from lifelong.plots import new_figure, png_bytes

    fig, ax = new_figure((7.0, 4.0))
    steps = [p["step"] + 1 for p in curve]
    rewards = [p["reward"] for p in curve]
    ax.plot(steps, rewards, ".", alpha=0.4, label="mean reward of the step's completions")
    window = max(1, len(curve) // 10)
    smooth = [statistics.fmean(rewards[max(0, i - window + 1): i + 1]) for i in range(len(rewards))]
    ax.plot(steps, smooth, "-", label=f"moving mean ({window} steps)")
    if any(p.get("similar") is not None for p in curve):
        sim = [(s, p["similar"]) for s, p in zip(steps, curve, strict=True) if p.get("similar") is not None]
        ax.plot([s for s, _ in sim], [v for _, v in sim], "x", alpha=0.4, label="similar reader score")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png_bytes(fig)


def train_writer(cfg: WriterTrainConfig, out: str | Path, *, resume: bool = True,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Roll the training states, run GRPO, save the adapter and the reward curve into ``out``.

    ``out/checkpoints/checkpoint-N`` (adapter + optimizer state; a rerun resumes
    from the last one), ``out/adapter`` (the final adapter), ``out/rewards.jsonl``
    (every completion with every term), ``out/curve.json`` and ``out/reward.png``.
    """
    try:
        import torch
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import (
            AutoModelForCausalLM,
            AutoTokenizer,
            PrinterCallback,
            TrainerCallback,
        )
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as exc:
        from lifelong.errors import ModelError

        raise ModelError(f"training the writer needs the [hf] extra ({exc.name} is missing)",
                         hint="pip install 'lifelong[hf]'") from None

    from lifelong.learn.writer_env import WriterEnv
    from lifelong.llm import load_llm

    say = progress or (lambda _m: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    ckpt_dir = out / "checkpoints"
    last = latest_checkpoint(ckpt_dir) if resume else None
    saved_cfg = out / "config.json"
    cfg_json = json.dumps(dataclasses.asdict(cfg), indent=1, sort_keys=True)
    if last is not None and saved_cfg.is_file():
        old = json.loads(saved_cfg.read_text(encoding="utf-8"))
        differs = sorted(k for k, v in dataclasses.asdict(cfg).items() if k != "steps" and old.get(k) != v)
        if differs:
            raise ConfigError(f"{out} holds a run with another configuration ({', '.join(differs)})",
                              hint="resume with the same config (only steps may change), or use --fresh "
                                   "or a new output folder")
    atomic_write_text(saved_cfg, cfg_json)
    rewards_path = out / "rewards.jsonl"
    if last is None:
        rewards_path.unlink(missing_ok=True)
    else:  # drop what the interrupted steps after the checkpoint logged
        done = int(last.name.split("-")[-1])
        kept = [r for r in read_rewards(rewards_path) if int(r["step"]) < done]
        atomic_write_text(rewards_path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                                for r in kept))
    t0 = time.perf_counter()
    reader_llm = load_llm(cfg.readers_model)
    try:
        env = WriterEnv(reader_llm, cfg.suite_for, cfg.protocol_config(), out / "env")
        states = []
        for seed in cfg.train_seeds:
            say(f"rolling world {seed}: {cfg.episodes} episodes with the base writer")
            states += env.roll(seed, cfg.episodes)
        atomic_write_text(out / "states.jsonl", "".join(json.dumps(s.summary(), ensure_ascii=False) + "\n"
                                                         for s in states))
        roll_s = time.perf_counter() - t0
        data = Dataset.from_list([{"prompt": s.prompt, "state": i} for i, s in enumerate(states)])
        reward = WriterReward(env, states, cfg.reward, rewards_path)
        folder = policy_folder(cfg.policy)
        tok = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        # A note is one line: a newline ends the completion, as it ends a session's reflection.
        # Every token holding a newline ends it (Gemma has "\n", "\n\n", … as tokens of their own).
        newline = sorted(i for piece, i in tok.get_vocab().items() if "\n" in piece)
        model.generation_config.eos_token_id = [tok.eos_token_id, *newline]
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        cuda = torch.cuda.is_available()
        args = GRPOConfig(
            output_dir=str(ckpt_dir), max_steps=cfg.steps, learning_rate=cfg.learning_rate,
            per_device_train_batch_size=cfg.num_generations * cfg.prompts_per_step,
            gradient_accumulation_steps=1, num_generations=cfg.num_generations,
            max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.beta,
            loss_type=cfg.loss_type, logging_steps=1, save_strategy="steps", save_steps=cfg.save_steps,
            report_to=[], seed=cfg.seed, data_seed=cfg.seed, use_cpu=not cuda, bf16=False, fp16=False,
            dataloader_num_workers=0, disable_tqdm=True, save_only_model=False,
        )
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")

        class Progress(TrainerCallback):
            def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
                if logs and "reward" in logs:
                    say(f"step {state.global_step}/{state.max_steps} reward={logs['reward']:.4f} "
                        f"similar={logs.get('protocol/similar', float('nan')):.3f} "
                        f"note_tokens={logs.get('protocol/note_tokens', float('nan')):.1f}")

        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=data,
                              processing_class=tok, peft_config=lora, callbacks=[Progress()])
        trainer.remove_callback(PrinterCallback)  # progress goes through ``progress``, one line a step
        if last is not None:
            say(f"resuming from {last.name}")
        t1 = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(last) if last is not None else None)
        train_s = time.perf_counter() - t1
        trainer.save_model(str(out / "adapter"))
        (out / "adapter" / "training_args.bin").unlink(missing_ok=True)  # a pickle nobody needs to load
    finally:
        reader_llm.close()
        torch.set_num_threads(threads)
    curve = reward_curve(read_rewards(rewards_path))
    atomic_write_text(out / "curve.json", json.dumps(curve, indent=1))
    if curve:
        atomic_write_bytes(out / "reward.png", plot_curve(curve, f"train-writer: {cfg.suite}, seeds "
                                                                 f"{','.join(map(str, cfg.train_seeds))}"))
    summary = {"states": len(states), "steps": cfg.steps, "roll_s": round(roll_s, 1), "train_s": round(train_s, 1),
               "first": curve[0] if curve else None, "last": curve[-1] if curve else None,
               "adapter": str(out / "adapter")}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary
