"""The ``onboarding`` suite: a fictional organisation's conventions.

A new hire is not told everything on day one. Each world is an organisation
with a handful of arbitrary conventions — which prefix each team's tickets
use, who owns each service, where reports live, which language customers are
answered in. Nothing in a model's weights can guess them. A task asks for one
convention inside a small work scenario; sometimes the task's environment
holds the handbook page that states it, otherwise the only source is the
feedback after a wrong attempt. Later tasks need the same conventions again,
so a note written once pays off many times — and a note that is wrong, or
about another topic, can only cost context.

Questions are phrased the way a base model can answer in a few tokens when
the fact is in its context ("Question: … Answer:"), so the difference memory
makes is measurable even with a 270M model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from lifelong.task import Task, expect_text, stable_id

ORGS = ["Velo", "Quillmark", "Brenwick", "Ostara", "Tamsin & Co", "Harrowgate", "Nimbra", "Corvel"]
TEAMS = ["payments", "search", "mobile", "billing", "security", "data"]
SERVICES = ["checkout", "login", "notifications", "invoices", "catalogue", "upload"]
FIRST = ["Mira", "Dana", "Ravi", "Ingrid", "Tomas", "Aiko", "Bruno", "Leila", "Owen", "Sanne"]
LAST = ["Tanaka", "Okafor", "Lindqvist", "Moreau", "Petrov", "Achebe", "Novak", "Halvorsen"]
LANGUAGES = ["German", "Dutch", "Spanish", "Italian", "French", "Portuguese", "Swedish"]
REPORT_KINDS = ["incident reports", "weekly reports", "audit reports"]
_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"

# What a customer or colleague might say when a team / service is involved.
_TEAM_SCENES = {
    "payments": ["A customer says a card payment failed twice.", "A refund has not arrived after ten days."],
    "search": ["Search results are empty since this morning.", "A customer cannot find products by name."],
    "mobile": ["The phone app crashes on start.", "Push messages arrive twice on the app."],
    "billing": ["An invoice shows the wrong amount.", "A customer was charged for a cancelled plan."],
    "security": ["A colleague received a suspicious login alert.", "A password reset link does not expire."],
    "data": ["A nightly export is missing rows.", "A dashboard shows yesterday's numbers."],
}


@dataclass(frozen=True)
class Convention:
    """One fact of the world, with the question that needs it."""

    key: str
    statement: str  # how the handbook / feedback states it
    question: str
    answer: str
    alternatives: tuple[str, ...] = ()
    scenes: tuple[str, ...] = ()
    topic: str = "general"


@dataclass
class OnboardingFamily:
    """Tasks about one organisation; ``world_seed`` picks the organisation.

    ``env_prob`` is the chance a task carries the handbook page that answers
    it; the rest must be learned from feedback (``max_attempts`` = 2) or memory.
    """

    world_seed: int = 0
    teams: int = 3
    services: int = 2
    env_prob: float = 0.25
    name: str = "onboarding"
    conventions: list[Convention] = field(init=False)
    org: str = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(f"onboarding-world:{self.world_seed}")
        self.org = rng.choice(ORGS)
        org = self.org
        facts: list[Convention] = []
        prefixes = set()
        for team in rng.sample(TEAMS, self.teams):
            while (prefix := "".join(rng.choice(_LETTERS) for _ in range(3))) in prefixes:
                pass
            prefixes.add(prefix)
            facts.append(Convention(
                key=f"prefix-{team}",
                statement=f"At {org}, tickets for the {team} team use the prefix {prefix}.",
                question=f"Which ticket prefix do you use for the {team} team?",
                answer=prefix,
                scenes=tuple(_TEAM_SCENES[team]),
                topic="tickets",
            ))
        for service in rng.sample(SERVICES, self.services):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            facts.append(Convention(
                key=f"owner-{service}",
                statement=f"At {org}, the {service} service is owned by {first} {last}.",
                question=f"Who owns the {service} service?",
                answer=f"{first} {last}",
                alternatives=(last,),  # the surname identifies the person
                scenes=(f"The {service} service returns errors.", f"The {service} service is slow today."),
                topic="owners",
            ))
        kind = rng.choice(REPORT_KINDS)
        folder = f"/srv/{org.split()[0].lower()}/{rng.choice(['ops', 'team', 'shared', 'archive'])}-{kind.split()[0]}"
        facts.append(Convention(
            key="report-folder",
            statement=f"At {org}, {kind} are saved in the folder {folder}/.",
            question=f"In which folder do you save {kind}?",
            answer=folder,
            scenes=(f"You have finished writing one of the {kind}.", f"Your manager asks where to find the {kind}."),
            topic="paths",
        ))
        language = rng.choice(LANGUAGES)
        facts.append(Convention(
            key="reply-language",
            statement=f"At {org}, replies to customers are written in {language}.",
            question="In which language do you write your reply to the customer?",
            answer=language,
            scenes=("A customer emails to ask about opening hours.", "A customer thanks the team for quick help."),
            topic="replies",
        ))
        self.conventions = facts

    def sample(self, rng: random.Random) -> Task:
        fact = rng.choice(self.conventions)
        scene = rng.choice(fact.scenes)
        case = rng.randrange(1000, 10000)  # makes tasks distinct, changes no fact
        prompt = f"You work at {self.org}. Case {case}: {scene}\nQuestion: {fact.question}\nAnswer:"
        environment = {}
        if rng.random() < self.env_prob:
            environment[f"handbook/{fact.topic}.md"] = f"# {self.org} handbook: {fact.topic}\n\n{fact.statement}\n"
        statement = fact.statement
        return Task(
            prompt=prompt,
            check=expect_text(fact.answer, *fact.alternatives),
            family=f"{self.name}-{self.world_seed}",
            id=f"{self.name}-{self.world_seed}/{fact.key}/{stable_id(prompt, sorted(environment))}",
            environment=environment,
            feedback=lambda answer, score: None if score >= 1.0 else f"Wrong. {statement}",
            max_attempts=2,
            metadata={"fact": fact.key, "answer": fact.answer, "statement": fact.statement},
        )


@dataclass
class DriftingOnboarding(OnboardingFamily):
    """An ``onboarding`` world where conventions change mid-run: from episode
    ``change_at`` on, ``changes`` of its conventions hold a new value (a new
    reply language, a new owner, a new prefix). A note written before the
    change is now wrong and costs every reader that trusts it; an ``EDIT`` or
    ``DELETE`` of it is what earns the reward back. The feedback after a wrong
    answer states the new convention ("… now …").

    ``at(episode)`` is the world as it stands in that episode; the protocol
    asks it for every writer task (so readers of that episode see it too).
    """

    change_at: int = 10
    changes: int = 1
    name: str = "onboarding-drift"
    changed: list[Convention] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        rng = random.Random(f"onboarding-drift:{self.world_seed}")
        picks = rng.sample(range(len(self.conventions)), min(self.changes, len(self.conventions)))
        changed = list(self.conventions)
        for i in picks:
            changed[i] = _changed(self.conventions[i], self.org, rng)
        self.changed = changed

    def at(self, episode: int) -> OnboardingFamily:
        """The world in ``episode``: a plain family holding the conventions then in force."""
        import copy

        now = copy.copy(self)
        now.conventions = self.changed if episode >= self.change_at else list(self.conventions)
        return now


def _changed(fact: Convention, org: str, rng: random.Random) -> Convention:
    """``fact`` with a new value, stated as a change."""
    if fact.key == "reply-language":
        new = rng.choice([x for x in LANGUAGES if x != fact.answer])
        statement = f"At {org}, replies to customers are now written in {new}."
        return Convention(fact.key, statement, fact.question, new, (), fact.scenes, fact.topic)
    if fact.key.startswith("owner-"):
        service = fact.key.removeprefix("owner-")
        old_last = fact.answer.split()[-1]
        first, last = rng.choice(FIRST), rng.choice([x for x in LAST if x != old_last])
        statement = f"At {org}, the {service} service is now owned by {first} {last}."
        return Convention(fact.key, statement, fact.question, f"{first} {last}", (last,), fact.scenes, fact.topic)
    if fact.key.startswith("prefix-"):
        team = fact.key.removeprefix("prefix-")
        while (new := "".join(rng.choice(_LETTERS) for _ in range(3))) == fact.answer:
            pass
        statement = f"At {org}, tickets for the {team} team now use the prefix {new}."
        return Convention(fact.key, statement, fact.question, new, (), fact.scenes, fact.topic)
    # the reports folder: a new folder
    new = fact.answer.rstrip("/") + "-new"
    statement = fact.statement.replace(fact.answer, new).replace(" are saved", " are now saved")
    return Convention(fact.key, statement, fact.question, new, (), fact.scenes, fact.topic)
