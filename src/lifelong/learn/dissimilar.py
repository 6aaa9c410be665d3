"""The dissimilar pool: general tasks from other distributions.

Notes about an organisation or a card game should not change the answer to
"What is the opposite of fast?". These tasks measure the other side of
memory: a model that pastes its notes into every answer loses here. They are
general knowledge a small base model mostly gets right without help, so a
drop is visible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lifelong.task import Task, expect_number, expect_text, stable_id

OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "day": "night",
    "open": "closed", "happy": "sad", "light": "dark", "old": "young", "wet": "dry",
    "early": "late", "full": "empty", "hard": "soft", "loud": "quiet", "rich": "poor",
}
CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Germany": "Berlin", "Spain": "Madrid",
    "England": "London", "Russia": "Moscow", "Egypt": "Cairo", "Greece": "Athens",
    "China": "Beijing", "Ireland": "Dublin", "Norway": "Oslo", "Portugal": "Lisbon",
}
COLOURS = {
    "grass": "green", "the sky on a clear day": "blue", "snow": "white", "coal": "black",
    "a ripe banana": "yellow", "a ripe tomato": "red", "milk": "white",
}
KINDS = ("arithmetic", "opposite", "capital", "colour")


@dataclass
class DissimilarPool:
    """General tasks; one attempt, no feedback, no environment."""

    name: str = "dissimilar"
    kinds: tuple[str, ...] = KINDS

    def sample(self, rng: random.Random) -> Task:
        kind = rng.choice(self.kinds)
        if kind == "arithmetic":
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            question, check, key = f"What is {a} + {b}?", expect_number(a + b), f"{a}+{b}"
        elif kind == "opposite":
            word = rng.choice(sorted(OPPOSITES))
            question, check, key = f"What is the opposite of {word}?", expect_text(OPPOSITES[word]), word
        elif kind == "capital":
            country = rng.choice(sorted(CAPITALS))
            question, check, key = (
                f"What is the capital of {country}?", expect_text(CAPITALS[country]), country
            )
        elif kind == "colour":
            thing = rng.choice(sorted(COLOURS))
            question, check, key = f"What colour is {thing}?", expect_text(COLOURS[thing]), thing
        else:
            raise ValueError(f"unknown dissimilar kind {kind!r}")
        prompt = f"Question: {question}\nAnswer:"
        return Task(
            prompt=prompt,
            check=check,
            family=self.name,
            id=f"{self.name}/{kind}/{stable_id(prompt)}",
            metadata={"kind": kind, "key": key},
        )
