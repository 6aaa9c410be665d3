"""lifelong.learn: does what one instance writes help the next?

Task suites (``onboarding``, ``procedure``, ``mixed``, a dissimilar pool, or
your own JSONL file), the writer/reader protocol with its reward, pluggable
strategies (``none``, ``transcript``, ``add-only``, ``notes``, ``full``) and
reports.

>>> from lifelong.learn import Protocol, ProtocolConfig, get_strategy, load_suite
>>> run = Protocol(llm, load_suite("onboarding", 0), get_strategy("full"),
...                ProtocolConfig(episodes=20, readers=4), "out").run()
"""

from lifelong.learn.demo import run_side_by_side
from lifelong.learn.dissimilar import DissimilarPool
from lifelong.learn.onboarding import OnboardingFamily
from lifelong.learn.procedure import ProcedureFamily
from lifelong.learn.protocol import (
    Protocol,
    ProtocolConfig,
    RunResult,
    episode_record,
    reader_task,
    real_session,
    writer_task,
)
from lifelong.learn.report import final_line, summarize, summary_table, write_report
from lifelong.learn.strategies import (
    MemoryFolder,
    Strategy,
    get_strategy,
    register_strategy,
    strategy_names,
)
from lifelong.learn.suites import (
    JsonlFamily,
    Suite,
    load_jsonl_suite,
    load_suite,
    register_suite,
    suite_names,
)
from lifelong.task import (
    Task,
    TaskFamily,
    answer_line,
    expect_choice,
    expect_number,
    expect_text,
)

__all__ = [
    "DissimilarPool", "JsonlFamily", "MemoryFolder", "OnboardingFamily", "ProcedureFamily", "Protocol",
    "ProtocolConfig", "RunResult", "Strategy", "Suite", "Task", "TaskFamily", "answer_line",
    "episode_record", "expect_choice", "expect_number", "expect_text", "final_line", "get_strategy",
    "load_jsonl_suite", "load_suite", "reader_task", "real_session", "register_strategy",
    "register_suite", "run_side_by_side", "strategy_names", "suite_names", "summarize",
    "summary_table", "write_report", "writer_task",
]
