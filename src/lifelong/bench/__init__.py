"""Evaluation and speed benchmarks, in one place (commands, never timed tests).

- ``evaluate``: accuracy by length of a trained model, reports and plots (``lifelong bench run``).
- ``models``: training / inference speed and state size of model configs (``bench models``).
- ``memory``: the neural memory's speed against titans-pytorch (``bench memory``).
- ``llm``: load time, prefill and decode tokens/s of a model backend (``bench llm``).
- ``store``: notes and docs store operations per second (``bench store``).
"""
