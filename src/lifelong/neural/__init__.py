"""lifelong.neural: weight memory (Titans neural long-term memory and what builds on it)."""

from lifelong.neural.memory import NeuralMemory, NeuralMemoryConfig
from lifelong.neural.state import MemoryState

__all__ = ["MemoryState", "NeuralMemory", "NeuralMemoryConfig"]
