"""Class-incremental learning: templated intents arrive a few classes at a time.

In the spirit of CLINC150 / Banking77 (short requests, one intent each), generated
offline from a seed. Each class is a topic (its own keywords, disjoint from every
other topic's) and a **made-up label** (a pseudo-word such as ``vomek``), so the
mapping from request to label cannot come from pretraining: a learner that has
not seen the class's examples cannot name it. The stream is ``tasks`` tasks of
``classes`` new classes each; a task's material is ``train`` labelled requests
per class (together they use every keyword of the class), its test ``test``
unlabelled requests per class, in other templates and keyword combinations.

Class-incremental means no task identity at test time: a query is a request,
the answer any label seen so far. Scoring is accuracy: the first word of the
answer must be the label (case and punctuation ignored).

Every test request is labelled consistently, checked by an independent solver
(``solve``) that reads only the material's text: it keeps the words of the
labelled requests that appear under exactly one label, and labels a test request
by those words. Tests check that it finds exactly the gold label for every test
request of many seeds.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from lifelong.data.base import ContinualTask, Query
from lifelong.errors import ConfigError

NAME = "class_incremental"

# Topic -> six keywords; keywords are disjoint across topics and from the templates.
TOPICS: dict[str, tuple[str, ...]] = {
    "weather": ("forecast", "rain", "umbrella", "storm", "temperature", "snowfall"),
    "banking": ("balance", "deposit", "overdraft", "cheque", "savings", "statement"),
    "travel": ("flight", "passport", "luggage", "boarding", "visa", "airport"),
    "food": ("pizza", "recipe", "dessert", "vegetarian", "takeaway", "menu"),
    "music": ("playlist", "guitar", "concert", "album", "lyrics", "drummer"),
    "health": ("prescription", "dentist", "vaccine", "allergy", "pharmacy", "symptoms"),
    "car": ("tyre", "engine", "mechanic", "windscreen", "petrol", "gearbox"),
    "home": ("plumber", "radiator", "doorbell", "carpet", "chimney", "boiler"),
    "pets": ("puppy", "kitten", "leash", "vet", "aquarium", "hamster"),
    "sports": ("football", "referee", "stadium", "tennis", "marathon", "goalkeeper"),
    "school": ("homework", "exam", "teacher", "timetable", "classroom", "diploma"),
    "shopping": ("receipt", "refund", "discount", "checkout", "coupon", "basket"),
    "computers": ("laptop", "keyboard", "password", "printer", "software", "router"),
    "garden": ("lawn", "tulips", "compost", "hedge", "seedlings", "greenhouse"),
    "movies": ("cinema", "trailer", "popcorn", "actor", "sequel", "subtitles"),
    "insurance": ("premium", "claim", "policy", "excess", "coverage", "underwriter"),
    "phone": ("voicemail", "ringtone", "charger", "sim", "contacts", "roaming"),
    "books": ("novel", "library", "chapter", "author", "paperback", "bookmark"),
    "fitness": ("gym", "treadmill", "dumbbells", "yoga", "stretching", "protein"),
    "taxes": ("refund-form", "accountant", "deduction", "invoice", "payroll", "audit"),
    "housing": ("landlord", "rent", "tenancy", "mortgage", "apartment", "lease"),
    "jobs": ("interview", "salary", "resume", "promotion", "manager", "vacancy"),
    "hotel": ("reception", "suite", "minibar", "checkout-time", "housekeeping", "pillow"),
    "post": ("parcel", "stamp", "courier", "envelope", "postcode", "tracking"),
    "energy": ("electricity", "meter", "solar", "tariff", "outage", "kilowatt"),
    "games": ("console", "joystick", "multiplayer", "level", "chess", "puzzle"),
    "art": ("painting", "canvas", "sculpture", "gallery", "easel", "watercolour"),
    "cooking": ("oven", "saucepan", "blender", "kettle", "spatula", "microwave"),
    "clothes": ("jacket", "trousers", "sneakers", "tailor", "zipper", "scarf"),
    "camping": ("tent", "campfire", "backpack", "lantern", "compass", "sleeping-bag"),
}

TRAIN_TEMPLATES = (
    "i have a question about my {a} and the {b}",
    "can you help me with the {a} or the {b}",
    "please tell me more about the {a} and my {b}",
)
TEST_TEMPLATES = (
    "what should i do about the {a}",
    "is there any news on my {a}",
    "i need some advice on the {a} and the {b}",
    "something is wrong with the {a}",
    "who can i ask about the {b} and the {a}",
)


@dataclass
class ClassIncConfig:
    tasks: int = 5  # tasks in the stream
    classes: int = 4  # new classes per task
    train: int = 3  # labelled requests per class in the material (they use all six keywords)
    test: int = 3  # test requests per class
    max_tokens: int = 6

    def __post_init__(self) -> None:
        for name, lo, hi in (("tasks", 1, 30), ("classes", 1, 30), ("train", 3, 12), ("test", 1, 50)):
            v = getattr(self, name)
            if not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"{name} must be a whole number in [{lo}, {hi}], got {v!r}")
        if self.tasks * self.classes > len(TOPICS):
            raise ConfigError(f"{self.tasks} tasks x {self.classes} classes need more than the "
                              f"{len(TOPICS)} topics there are", hint="use fewer tasks or classes")


def _label(rng: random.Random, used: set[str]) -> str:
    while True:
        w = "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(2))
        w += rng.choice("kmnrst")
        if w not in used:
            used.add(w)
            return w


def query_prompt(request: str) -> str:
    return f"Request: {request}\nLabel:"


def _fill(template: str, a: str, b: str) -> str:
    return template.format(a=a, b=b)


def build_tasks(seed: int, cfg: ClassIncConfig | None = None) -> list[ContinualTask]:
    cfg = cfg or ClassIncConfig()
    rng = random.Random(f"{NAME}:{seed}")
    topics = rng.sample(sorted(TOPICS), cfg.tasks * cfg.classes)
    used: set[str] = set()
    tasks = []
    for t in range(cfg.tasks):
        lines = [f"Requests with their labels (set {t + 1}):"]
        practice: list[Query] = []
        queries: list[Query] = []
        labels = []
        for topic in topics[t * cfg.classes: (t + 1) * cfg.classes]:
            label = _label(rng, used)
            labels.append(label)
            kws = list(TOPICS[topic])
            rng.shuffle(kws)
            # Training requests: the first three cover the six keywords in pairs; more reuse them.
            train = []
            for i in range(cfg.train):
                a, b = (kws[2 * i], kws[2 * i + 1]) if i < 3 else tuple(rng.sample(kws, 2))
                train.append(_fill(TRAIN_TEMPLATES[i % len(TRAIN_TEMPLATES)], a, b))
            for r in train:
                practice.append(Query(query_prompt(r), label, cfg.max_tokens, {"topic": topic}))
            tests: list[str] = []
            seen = set(train)
            while len(tests) < cfg.test:
                a, b = rng.sample(kws, 2)
                r = _fill(rng.choice(TEST_TEMPLATES), a, b)
                if r in seen and len(seen) < 5 * len(TEST_TEMPLATES) * 30:
                    continue
                seen.add(r)
                tests.append(r)
            queries += [Query(query_prompt(r), label, cfg.max_tokens, {"topic": topic}) for r in tests]
        # The material interleaves the classes (as a labelled set would be read).
        order = list(range(len(practice)))
        rng.shuffle(order)
        practice = [practice[i] for i in order]
        lines += [f"{q.prompt} {q.reference}" for q in practice]
        rng.shuffle(queries)
        tasks.append(ContinualTask(
            name=f"task{t}", material="\n".join(lines), queries=queries, practice=practice,
            metric="accuracy", score=accuracy, meta={"labels": labels},
        ))
    return tasks


# --------------------------------------------------------------------------- scoring


def predicted_label(output: str) -> str:
    """The first word of the first non-empty line, lower-cased, without punctuation."""
    for line in (output or "").splitlines():
        words = re.findall(r"[a-z0-9-]+", line.lower())
        if words:
            return words[0]
    return ""


def accuracy(outputs: list[str], references: list[str]) -> float:
    if len(outputs) != len(references):
        raise ConfigError(f"{len(outputs)} outputs for {len(references)} references")
    if not outputs:
        return 0.0
    return sum(predicted_label(o) == r.lower() for o, r in zip(outputs, references)) / len(outputs)


# --------------------------------------------------------------------------- the solver


def solve(materials: list[str], request: str) -> list[str]:
    """The labels the materials' distinctive words give ``request`` (a consistent
    request gets exactly one). Reads only the materials' text."""
    words_of: dict[str, set[str]] = {}
    for material in materials:
        for m in re.finditer(r"^Request: (.*)\nLabel: (\S+)$", material, re.M):
            words_of.setdefault(m.group(2), set()).update(m.group(1).split())
    owners: dict[str, set[str]] = {}
    for label, words in words_of.items():
        for w in words:
            owners.setdefault(w, set()).add(label)
    found = {next(iter(owners[w])) for w in request.split() if len(owners.get(w, ())) == 1}
    return sorted(found)
