"""lifelong.llm."""
