"""`lifelong bench llm` runs end to end and ends with its machine-readable line (no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys


def test_bench_llm_prints_its_last_line():
    out = subprocess.run(
        [sys.executable, "-m", "lifelong.cli.main", "bench", "llm", "--model", "local?ctx=1024",
         "--prompt-tokens", "48", "--decode-tokens", "6", "--repeats", "1"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout.strip().splitlines()
    m = re.fullmatch(r"prefill_tok_s=([\d.]+) decode_tok_s=([\d.]+) load_s=([\d.]+)", out[-1])
    assert m, out[-1]
    assert all(float(x) > 0 for x in m.groups())


def test_bench_llm_rejects_an_unknown_peer():
    res = subprocess.run([sys.executable, "-m", "lifelong.cli.main", "bench", "llm", "--compare", "vllm"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 1 and "unknown --compare" in res.stderr and "Traceback" not in res.stderr
