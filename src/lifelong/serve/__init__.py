"""Serving: the OpenAI-compatible model server (``llm``) and the MCP server of a
namespace's notes and docs (``mcp``)."""
