"""Figures as PNG bytes: the one place that sets up matplotlib (headless) and saves.

Reports (``lifelong.learn.report``, ``lifelong.bench.evaluate``) and commands
draw on the axes this returns and hand the figure back to :func:`png_bytes`,
which writes it deterministically (no software/date metadata) and closes it.
"""

from __future__ import annotations

import io
from typing import Any


def new_figure(figsize: tuple[float, float] = (7.0, 4.0), dpi: int = 110) -> tuple[Any, Any]:
    """A new figure and its axes on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, dpi=dpi)


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes (tight layout); the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
