"""lifelong.context."""
