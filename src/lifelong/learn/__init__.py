"""lifelong.learn."""
