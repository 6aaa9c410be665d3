"""A bAbI world (Weston et al., 2015) and stories for tasks qa1-qa5, generated from a seed.

The world has actors, locations and objects. An actor moves between locations; an
object is picked up only where it lies and only when nobody holds it; it is dropped
only by its holder; it is given only by its holder to an actor in the same place.
Every story is a run of that world, told one action per sentence, followed by one
question whose answer follows from the story:

- qa1 single supporting fact: "Where is Mary?"
- qa2 two supporting facts: "Where is the football?" (who holds it, where they went)
- qa3 three supporting facts: "Where was the football before the kitchen?"
- qa4 two-argument relations: "The office is north of the bedroom." / "What is north of
  the bedroom?" or "What is the bedroom south of?"
- qa5 three-argument relations: "Fred gave the football to Bill." / "Who gave the
  football to Bill?", "Who received the football?", "What did Fred give to Bill?", ...

The generator only asks questions with exactly one correct answer; the tests run an
independent solver over the story text to check that answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

ACTORS = ("Mary", "John", "Daniel", "Sandra")
QA5_ACTORS = ("Bill", "Fred", "Jeff", "Mary")
LOCATIONS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("apple", "football", "milk")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}

MOVE = (
    "{a} moved to the {l}.",
    "{a} went to the {l}.",
    "{a} journeyed to the {l}.",
    "{a} travelled to the {l}.",
    "{a} went back to the {l}.",
)
GET = (
    "{a} picked up the {o} there.",
    "{a} got the {o} there.",
    "{a} grabbed the {o} there.",
    "{a} took the {o} there.",
)
DROP = (
    "{a} dropped the {o}.",
    "{a} discarded the {o}.",
    "{a} put down the {o}.",
    "{a} left the {o}.",
)
GIVE = ("{a} gave the {o} to {b}.", "{a} handed the {o} to {b}.", "{a} passed the {o} to {b}.")
RELATION = "The {x} is {d} of the {y}."

# BABILong's answer labels per task (its metrics.TASK_LABELS).
TASK_LABELS: dict[str, tuple[str, ...]] = {
    "qa1": LOCATIONS,
    "qa2": LOCATIONS,
    "qa3": LOCATIONS,
    "qa4": LOCATIONS,
    "qa5": ("Bill", "Fred", "Jeff", "Mary", "apple", "football", "milk"),
}

# Story sizes (number of facts, inclusive), in the range of the original tasks.
FACTS = {"qa1": (2, 10), "qa2": (4, 20), "qa3": (6, 24), "qa4": (2, 2), "qa5": (4, 16)}


@dataclass
class Story:
    facts: list[str]
    question: str
    answer: str
    actions: list[tuple] = field(default_factory=list)  # ("move", a, l), ("get", a, o), ...


class World:
    """The state of a bAbI world; ``valid_actions`` lists what its rules allow now."""

    def __init__(self, rng: random.Random, actors: tuple[str, ...], objects: tuple[str, ...]):
        self.actors = actors
        self.objects = objects
        self.where: dict[str, str | None] = {a: None for a in actors}  # None: not yet told
        # Objects lie somewhere unseen until someone picks them up there.
        self.lies: dict[str, str] = {o: rng.choice(LOCATIONS) for o in objects}
        self.holder: dict[str, str | None] = {o: None for o in objects}

    def object_location(self, o: str) -> str:
        h = self.holder[o]
        return self.where[h] if h is not None else self.lies[o]

    def valid_actions(self, kinds: tuple[str, ...]) -> dict[str, list[tuple]]:
        out: dict[str, list[tuple]] = {k: [] for k in kinds}
        for a in self.actors:
            if "move" in kinds:
                out["move"] += [("move", a, loc) for loc in LOCATIONS if loc != self.where[a]]
            if self.where[a] is None:
                continue  # an actor acts on things only once the story has placed them
            for o in self.objects:
                h = self.holder[o]
                if "get" in kinds and h is None and self.lies[o] == self.where[a]:
                    out["get"].append(("get", a, o))
                if "drop" in kinds and h == a:
                    out["drop"].append(("drop", a, o))
                if "give" in kinds and h == a:
                    out["give"] += [
                        ("give", a, o, b)
                        for b in self.actors
                        if b != a and self.where[b] == self.where[a]
                    ]
        return out

    def apply(self, action: tuple) -> None:
        kind = action[0]
        if kind == "move":
            self.where[action[1]] = action[2]
        elif kind == "get":
            self.holder[action[2]] = action[1]
        elif kind == "drop":
            o = action[2]
            self.lies[o] = self.where[action[1]]
            self.holder[o] = None
        elif kind == "give":
            self.holder[action[2]] = action[3]


def tell(action: tuple, rng: random.Random) -> str:
    kind = action[0]
    if kind == "move":
        return rng.choice(MOVE).format(a=action[1], l=action[2])
    if kind == "get":
        return rng.choice(GET).format(a=action[1], o=action[2])
    if kind == "drop":
        return rng.choice(DROP).format(a=action[1], o=action[2])
    return rng.choice(GIVE).format(a=action[1], o=action[2], b=action[3])


# Relative weights of action kinds; kinds with no valid action this step are skipped.
_WEIGHTS = {
    "qa1": {"move": 1.0},
    "qa2": {"move": 0.5, "get": 0.3, "drop": 0.2},
    "qa3": {"move": 0.5, "get": 0.3, "drop": 0.2},
    "qa5": {"move": 0.35, "get": 0.25, "drop": 0.1, "give": 0.3},
}


def _run(rng: random.Random, task: str, n: int) -> tuple[World, list[tuple], list[str]]:
    actors = QA5_ACTORS if task == "qa5" else ACTORS
    world = World(rng, actors, OBJECTS)
    weights = _WEIGHTS[task]
    actions, facts = [], []
    for _ in range(n):
        valid = world.valid_actions(tuple(weights))
        kinds = [k for k in weights if valid[k]]
        kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        action = rng.choice(valid[kind])
        world.apply(action)
        actions.append(action)
        facts.append(tell(action, rng))
    return world, actions, facts


def _trajectory(actions: list[tuple], o: str) -> list[str]:
    """The known places of object ``o``, in order (from its first pick-up on)."""
    where: dict[str, str] = {}
    holder, traj = None, []
    for act in actions:
        if act[0] == "move":
            where[act[1]] = act[2]
            if act[1] == holder:
                traj.append(act[2])
        elif act[0] == "get" and act[2] == o:
            holder = act[1]
            if not traj or traj[-1] != where[holder]:
                traj.append(where[holder])
        elif act[0] == "drop" and act[2] == o:
            holder = None
        elif act[0] == "give" and act[2] == o:
            holder = act[3]
    return traj


def generate(task: str, rng: random.Random, n_facts: int | None = None) -> Story:
    """A story and one question for ``task`` in qa1..qa5."""
    if task == "qa4":
        return _qa4(rng)
    lo, hi = FACTS[task]
    for _ in range(1000):
        n = n_facts or rng.randint(lo, hi)
        world, actions, facts = _run(rng, task, n)
        story = _ask(task, rng, world, actions, facts)
        if story is not None:
            return story
    raise RuntimeError(f"no answerable {task} story in 1000 tries")  # pragma: no cover


def _ask(task: str, rng: random.Random, world: World, actions, facts) -> Story | None:
    if task == "qa1":
        placed = [a for a in world.actors if world.where[a] is not None]
        a = rng.choice(placed)
        return Story(facts, f"Where is {a}?", world.where[a], actions)
    if task == "qa2":
        known = [o for o in world.objects if _trajectory(actions, o)]
        if not known:
            return None
        # Prefer an object that someone carried somewhere: that takes two facts.
        carried = [o for o in known if len(_trajectory(actions, o)) >= 2]
        o = rng.choice(carried or known)
        return Story(facts, f"Where is the {o}?", world.object_location(o), actions)
    if task == "qa3":
        options = []
        for o in world.objects:
            traj = _trajectory(actions, o)
            # "before the X" must name one visit: X is the last place, visited once.
            if len(traj) >= 2 and traj.count(traj[-1]) == 1:
                options.append((o, traj[-1], traj[-2]))
        if not options:
            return None
        o, last, before = rng.choice(options)
        return Story(facts, f"Where was the {o} before the {last}?", before, actions)
    if task == "qa5":
        gives = [a for a in actions if a[0] == "give"]
        if not gives:
            return None
        candidates = []
        for _, a, o, b in gives:
            forms = [
                (
                    f"Who gave the {o} to {b}?",
                    lambda g, o=o, b=b: g[1] if (g[2], g[3]) == (o, b) else None,
                ),
                (f"Who received the {o}?", lambda g, o=o: g[3] if g[2] == o else None),
                (
                    f"What did {a} give to {b}?",
                    lambda g, a=a, b=b: g[2] if (g[1], g[3]) == (a, b) else None,
                ),
                (
                    f"Who did {a} give the {o} to?",
                    lambda g, a=a, o=o: g[3] if (g[1], g[2]) == (a, o) else None,
                ),
                (f"Who gave the {o}?", lambda g, o=o: g[1] if g[2] == o else None),
            ]
            for question, match in forms:
                answers = {m for g in gives if (m := match(g)) is not None}
                if len(answers) == 1:
                    candidates.append((question, answers.pop()))
        if not candidates:
            return None
        question, answer = rng.choice(candidates)
        return Story(facts, question, answer, actions)
    raise ValueError(task)


def _qa4(rng: random.Random) -> Story:
    while True:
        x, y, z = rng.sample(LOCATIONS, 3)
        d1, d2 = rng.choice(list(OPPOSITE)), rng.choice(list(OPPOSITE))
        # Two relations sharing one place, as in the original stories.
        rels = [(x, d1, y), (z, d2, x) if rng.random() < 0.5 else (y, d2, z)]
        facts = [RELATION.format(x=a, d=d, y=b) for a, d, b in rels]
        closure = set(rels) | {(b, OPPOSITE[d], a) for a, d, b in rels}
        a, d, b = rng.choice(rels)
        if rng.random() < 0.5:
            question = f"What is {d} of the {b}?"
            answers = {p for p, dd, q in closure if dd == d and q == b}
        else:
            question = f"What is the {a} {d} of?"
            answers = {q for p, dd, q in closure if dd == d and p == a}
        if len(answers) == 1:
            return Story(facts, question, answers.pop(), [("rel", *r) for r in rels])


def vocabulary() -> set[str]:
    """Every name, place, object and direction a story can mention (lowercase)."""
    return {w.lower() for w in ACTORS + QA5_ACTORS + LOCATIONS + OBJECTS + tuple(OPPOSITE)}


def template_lines() -> list[str]:
    lines = []
    for a in ACTORS + QA5_ACTORS:
        for loc in LOCATIONS:
            lines += [t.format(a=a, l=loc) for t in MOVE]
            lines.append(f"Where is {a}?")
        for o in OBJECTS:
            lines += [t.format(a=a, o=o) for t in GET + DROP]
            lines += [t.format(a=a, o=o, b=b) for t in GIVE for b in QA5_ACTORS if b != a]
    for o in OBJECTS:
        lines.append(f"Where is the {o}?")
        lines += [f"Where was the {o} before the {loc}?" for loc in LOCATIONS]
    for x in LOCATIONS:
        for d in OPPOSITE:
            lines += [RELATION.format(x=x, d=d, y=y) for y in LOCATIONS if y != x]
    lines.append("Question: Answer:")
    return lines
