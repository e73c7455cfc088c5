"""Results out: the ``ai_results`` channel.

``channel`` holds the ``ai_results`` source, ``ResultsIngest`` (a finished case → one stored
AI report), ``escalate`` and ``ResultsProcessor`` (the report → each destination's payload,
built by the payload builders registered by name) and the ``json`` alert payload; ``model``
holds the report itself (``AIReport``, ``ModelRun``, ``ResultBuild``).
"""
