"""radbridge engine: the protocol-agnostic runtime (store, pipeline, config, CLI)."""

__version__ = "0.1.0"
