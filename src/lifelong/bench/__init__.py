"""lifelong.bench."""
