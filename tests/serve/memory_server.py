"""Helpers for the memory-server tests: tiny untrained checkpoints and a real server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import torch

from lifelong.neural.config import ModelConfig
from lifelong.neural.lm import CausalLM

TINY = {
    "lmm": dict(kind="lmm", vocab_size=260, dim=16, n_layers=2, n_heads=2, memory_chunk=4),
    "mac": dict(kind="mac", vocab_size=260, dim=16, n_layers=2, n_heads=2, memory_chunk=4, segment_len=8,
                n_persistent=2),
    "mal": dict(kind="mal", vocab_size=260, dim=16, n_layers=1, n_heads=2, memory_chunk=4, window=8),
}


def tiny_checkpoint(folder: Path, kind: str = "lmm", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = CausalLM(ModelConfig(**TINY[kind]))
    return model.save_pretrained(folder / f"tiny-{kind}", meta={"tokenizer": "byte", "step": 0})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """``build``'s app under uvicorn in a thread of this process."""

    def __init__(self, config) -> None:
        import uvicorn

        from lifelong.serve.memory.serve import build

        self.app, self.engine, self.name = build(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engine.close()
        self.engine.store.close()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)
