"""Training recipes: one recipe per file, shared config and checkpointing.

- ``config``: the run config (``[model]``, ``[task]``, ``[train]`` tables) and its loader.
- ``checkpoint``: save / load / find the latest checkpoint of a run (used by resume).
- ``lm``: the training loop of every model kind on every sequence task (``lifelong train``).
- ``distill``: notes → weights: context distillation of a namespace's notes into a LoRA
  adapter of the embedded model (``lifelong consolidate --into-weights``).
"""
