"""lifelong: continual learning for language models.

Two roads, measured on the same work:

* context memory (``lifelong.context``): short notes always in the context and
  verbose documentation on disk, written by the model after every task;
* weight memory (``lifelong.neural``): Titans' neural long-term memory and the
  models built on it.
"""

from lifelong.errors import LifelongError

__version__ = "0.2.0"
__all__ = ["LifelongError", "__version__"]
