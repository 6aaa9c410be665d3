"""The model layer: one small protocol, several backends, chosen by a spec string.

>>> from lifelong.llm import load_llm
>>> llm = load_llm("local")            # embedded Gemma 3 270M through llama.cpp
>>> llm.complete("The capital of France is", max_tokens=8).text
"""

from lifelong.llm.base import LLM, Completion, Message, ToolCall, render_messages
from lifelong.llm.spec import FORMS, load_llm

__all__ = ["LLM", "Completion", "Message", "ToolCall", "FORMS", "load_llm", "render_messages"]
