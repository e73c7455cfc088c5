"""Channel processors: what the pipeline does with each stored message.

A channel's ``process`` names a processor registered with ``engine.registry``:
``forward`` (here) passes messages on unchanged; the others register from the
package that owns their protocol (``orders`` and ``final_reports`` in
``mappings.hl7v2.plugin``, ``results`` in ``engine.results.channel``). A processor's
outcome (status, layers, deliveries, mapped domain event) is applied by the
store in one transaction; mapping never runs on the ACK path.
"""

from __future__ import annotations

from typing import Any

from engine import registry
from engine.flow.pipeline import Passthrough, Processor


@registry.register_processor("forward", "pass messages on unchanged", rank=0)
def _forward(channel: Any, config: Any) -> Processor:
    return Passthrough(channel.forward_to)


def processor_for(channel: Any, config: Any = None) -> Processor:
    """The processor a channel's ``process`` names (an ``ai_results`` source: ``results``)."""
    name = channel.process
    if channel.source is not None and channel.source.type == "ai_results":
        name = "results"
    return registry.processor(name).factory(channel, config)  # type: ignore[no-any-return]
