"""lifelong: continual learning for language models.

Two roads, measured on the same work:

* context memory (``lifelong.context``): short notes always in the context and
  verbose documentation on disk, written by the model after every task;
* weight memory (``lifelong.neural``): Titans' neural long-term memory and the
  models built on it.
"""

from lifelong.errors import LifelongError

__version__ = "0.2.0"
__all__ = ["LifelongError", "Memory", "__version__"]


def __getattr__(name: str):  # lifelong.Memory, without importing the context layer up front
    if name == "Memory":
        from lifelong.context.memory import Memory

        return Memory
    raise AttributeError(f"module 'lifelong' has no attribute {name!r}")
