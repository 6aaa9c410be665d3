"""lifelong.context.store."""
