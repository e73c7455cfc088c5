"""AI inference: model registry, routing, batching dispatcher (see issue: AI inference)."""
