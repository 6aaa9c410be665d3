"""lifelong.serve."""
