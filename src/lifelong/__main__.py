"""``python -m lifelong …``: the command line without the ``lifelong`` script on PATH
(what an MCP client's config can name with the interpreter's absolute path)."""

from lifelong.cli.main import main

main()
