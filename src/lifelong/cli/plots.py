"""Plots the commands draw from what the library wrote (PNG bytes)."""

from __future__ import annotations

import json
from pathlib import Path

from lifelong.plots import new_figure, png_bytes


def loss_curve_png(path: Path, title: str) -> bytes:
    """The training loss curve from a run's metrics.jsonl."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    fig, ax = new_figure(figsize=(6.4, 4.0))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (scored tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return png_bytes(fig)
