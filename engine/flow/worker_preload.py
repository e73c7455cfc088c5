"""Imported once by the pipeline workers' forkserver, so that every worker forked from it
starts with the plugins registered and the configuration model built (``engine.flow.workers``).
Nothing here runs in the engine's own process."""

from __future__ import annotations

from engine import plugins

plugins.load()

import engine.config.schema  # noqa: E402,F401  (the channel model: built from the registry)
import engine.flow.workers  # noqa: E402,F401
