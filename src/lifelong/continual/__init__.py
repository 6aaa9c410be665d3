"""Continual learning on streams of tasks: learners with context or weight memory, side by side.

- ``learners``: the ``Learner`` protocol (``learn``, ``answer``, ``memory``) and the
  built-ins (``none``, ``icl``, ``memory``, ``memory+docs``).
- ``harness``: a learner over a stream (``run_stream``): the retention matrix
  ``R[i][j]``, its metrics, the cost; over seeds and learners (``run_benchmark``).
- ``metrics``: average accuracy, backward transfer, forgetting.

The streams are generated in ``lifelong.data`` (``classinc``, ``novel_lang``)::

    from lifelong.continual import make_learner, run_stream
    from lifelong.data.registry import get_stream
    from lifelong.llm import load_llm

    result = run_stream(make_learner("icl", load_llm("local")), get_stream("novel_translation", 0))
    print(result.R, result.metrics, result.cost)

A weight learner plugs in as any object with ``name``, ``learn(task)``,
``answer(query) -> Answer`` and ``memory() -> MemoryCost`` (``run_benchmark``
takes a factory ``seed -> learner`` beside the built-in names).
"""

from lifelong.continual.harness import StreamResult, run_benchmark, run_stream
from lifelong.continual.learners import (
    Answer,
    ContextMemoryLearner,
    InContextLearner,
    Learner,
    MemoryCost,
    NoMemoryLearner,
    make_learner,
)
from lifelong.continual.metrics import average_accuracy, backward_transfer, forgetting

__all__ = [
    "Answer", "ContextMemoryLearner", "InContextLearner", "Learner", "MemoryCost", "NoMemoryLearner",
    "StreamResult", "average_accuracy", "backward_transfer", "forgetting", "make_learner",
    "run_benchmark", "run_stream",
]
