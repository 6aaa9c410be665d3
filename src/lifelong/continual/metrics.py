"""Continual-learning metrics from a retention matrix.

``R[i][j]`` is the score on task ``j``'s test after learning tasks ``0..i``
(``None`` where it was not measured, e.g. ``j > i``). With ``T`` tasks:

- **average accuracy** (Lopez-Paz & Ranzato, 2017, GEM, eq. "ACC"):
  ``ACC = 1/T * sum_j R[T-1][j]``, the final scores averaged over the tasks;
- **backward transfer** (ibid., eq. "BWT"):
  ``BWT = 1/(T-1) * sum_{j<T-1} (R[T-1][j] - R[j][j])``, how learning later tasks
  changed earlier ones (negative: forgetting);
- **forgetting** (Chaudhry et al., 2018, RWalk, eq. 3 at the last step):
  ``f_j = max_{l in j..T-2} R[l][j] - R[T-1][j]`` for ``j < T-1``, and
  ``F = 1/(T-1) * sum_{j<T-1} f_j``: the drop from the best score a task had once
  learnt (the paper's max runs over ``l < T-1``; scores before task ``j`` was learnt
  are not measured here, as in common implementations).

BWT and forgetting are undefined for one task (``None``). All sums are in float64
(Python floats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Matrix = Sequence[Sequence[float | None]]


def _cell(R: Matrix, i: int, j: int) -> float:
    v = R[i][j]
    if v is None:
        raise ValueError(f"R[{i}][{j}] was not measured")
    return float(v)


def _check(R: Matrix) -> int:
    T = len(R)
    if T == 0 or any(len(row) != T for row in R):
        raise ValueError("the retention matrix must be square and non-empty")
    return T


def average_accuracy(R: Matrix) -> float:
    T = _check(R)
    return math.fsum(_cell(R, T - 1, j) for j in range(T)) / T


def backward_transfer(R: Matrix) -> float | None:
    T = _check(R)
    if T < 2:
        return None
    return math.fsum(_cell(R, T - 1, j) - _cell(R, j, j) for j in range(T - 1)) / (T - 1)


def forgetting(R: Matrix) -> float | None:
    T = _check(R)
    if T < 2:
        return None
    drops = [max(_cell(R, l, j) for l in range(j, T - 1)) - _cell(R, T - 1, j) for j in range(T - 1)]
    return math.fsum(drops) / (T - 1)


def summary(R: Matrix) -> dict[str, float | None]:
    return {"average": average_accuracy(R), "bwt": backward_transfer(R), "forgetting": forgetting(R)}


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of the values that are not None."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
