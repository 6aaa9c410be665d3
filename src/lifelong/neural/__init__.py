"""lifelong.neural: weight memory (Titans neural long-term memory and what builds on it).

- ``memory/``: the neural long-term memory (``NeuralMemory``, ``MemoryState``).
- ``config``: ``ModelConfig`` and the model kinds; ``lm``: the causal-LM shell.
- ``attention``, ``deltanet``: the baselines' sequence mixers; ``layers/``: MAC, MAG, MAL, LMM,
  Hope (CMS, self-modifying Titans), E2E-TTT.
"""

from lifelong.neural.memory import MemoryState, NeuralMemory, NeuralMemoryConfig

__all__ = ["MemoryState", "NeuralMemory", "NeuralMemoryConfig"]
