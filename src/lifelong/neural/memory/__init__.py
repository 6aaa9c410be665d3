"""The Titans neural long-term memory: ``NeuralMemory``, its config and its state.

``module.py`` reads top to bottom like the paper's appendix; the arithmetic
lives in ``ops.py`` (general path), ``fused.py`` + ``chunk_loop.py`` (the
default path, native or eager), ``naive.py`` (the float64 reference).
"""

from lifelong.neural.memory.config import NeuralMemoryConfig, stable_max_lr
from lifelong.neural.memory.module import NeuralMemory
from lifelong.neural.memory.state import MemoryState

__all__ = ["MemoryState", "NeuralMemory", "NeuralMemoryConfig", "stable_max_lr"]
