"""The ``radbridge`` command line: with ``engine.plugins``, the composition root.

``main`` (argv in, exit status out) and ``entry`` (the console script ``radbridge``) live in
``engine.cli.commands``; each group of subcommands has its module here (``send``, ``messages``,
``deliveries``, ``clinical``, ``inference``, ``demo``), ``serve`` runs the engine for
``radbridge run``, and ``args`` holds the option value types. These are the only modules of
``engine/`` (with ``engine/plugins.py``) that may import the protocol packages.
"""

from engine.cli.commands import entry, main

__all__ = ["entry", "main"]
