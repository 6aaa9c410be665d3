"""lifelong.neural."""
