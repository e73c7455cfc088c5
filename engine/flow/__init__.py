"""The flow: how a message or an instance goes from an edge through the store and out.

``runtime`` (the engine's lifecycle, and the operator's stop, start, redeploy, pause,
resume and reload of channels); ``ingest`` (a raw message: store, then answer) and
``instances`` (a DICOM instance: durable file, then index); ``pipeline`` and ``processors``
(a stored message → its channel's processor); ``delivery`` (each destination's queue, in
order, with retries); ``assembly`` (instances → complete studies); ``retention``;
``signals`` (changes other processes announce in the store).
"""
