"""The ``procedure`` suite: a made-up card game whose rules are learned from feedback.

Each world is a game with a name nobody has heard of, five moves, a move for
each card colour, and pitfalls: situations where the obvious rule is wrong
("on a red card, burn — except right after a blue card: flip"). No rulebook
covers the pitfalls; the game only says what the right move was after a wrong
one. A task asks for the move in one situation, so what a model learns from
one game's feedback decides the next game's score.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from lifelong.task import Task, expect_choice, stable_id

GAMES = ["Korbo", "Tazzle", "Wemble", "Prindle", "Skarn", "Ovvo", "Glimmet", "Dravel"]
MOVES = ["flip", "hold", "swap", "pass", "burn"]
COLOURS = ["red", "green", "blue", "yellow"]
PITFALL_CONTEXTS = ["on the first turn", "right after a blue card", "when you hold three cards"]


@dataclass(frozen=True)
class Rule:
    key: str
    situation: str  # "a red card", "a red card on the first turn"
    move: str
    pitfall: bool = False


@dataclass
class ProcedureFamily:
    """Tasks of one game; ``world_seed`` picks the game and its rules."""

    world_seed: int = 0
    colours: int = 3
    pitfalls: int = 2
    rulebook_prob: float = 0.2
    name: str = "procedure"
    game: str = field(init=False)
    rules: list[Rule] = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(f"procedure-world:{self.world_seed}")
        self.game = rng.choice(GAMES)
        rules = []
        colours = rng.sample(COLOURS, self.colours)
        for colour in colours:
            rules.append(Rule(key=colour, situation=f"a {colour} card", move=rng.choice(MOVES)))
        for i in range(self.pitfalls):
            base = rules[i % len(colours)]
            context = PITFALL_CONTEXTS[i % len(PITFALL_CONTEXTS)]
            # A pitfall is only a pitfall if the obvious move is wrong there.
            move = rng.choice([m for m in MOVES if m != base.move])
            rules.append(Rule(
                key=f"{base.key}-{context.replace(' ', '-')}",
                situation=f"{base.situation} {context}",
                move=move,
                pitfall=True,
            ))
        self.rules = rules

    def statement(self, rule: Rule) -> str:
        return f"In {self.game}, on {rule.situation} you must {rule.move}."

    def rulebook(self) -> str:
        # The rulebook states the plain rules only; pitfalls are learned the hard way.
        lines = [f"# {self.game} rules", "", f"Moves: {', '.join(MOVES)}."]
        lines += [self.statement(r) for r in self.rules if not r.pitfall]
        return "\n".join(lines) + "\n"

    def sample(self, rng: random.Random) -> Task:
        rule = rng.choice(self.rules)
        game_no = rng.randrange(100, 1000)
        prompt = (
            f"You are playing {self.game}, game {game_no}. The moves are {', '.join(MOVES)}.\n"
            f"Question: In {self.game}, what must you do on {rule.situation}?\nAnswer:"
        )
        environment = {}
        if rng.random() < self.rulebook_prob:
            environment[f"{self.game.lower()}/rules.md"] = self.rulebook()
        statement = self.statement(rule)
        return Task(
            prompt=prompt,
            check=expect_choice(rule.move, MOVES),
            family=f"{self.name}-{self.world_seed}",
            id=f"{self.name}-{self.world_seed}/{rule.key}/{stable_id(prompt, sorted(environment))}",
            environment=environment,
            feedback=lambda answer, score: None if score >= 1.0 else f"Wrong move. {statement}",
            max_attempts=2,
            metadata={"rule": rule.key, "answer": rule.move, "pitfall": rule.pitfall, "statement": statement},
        )
