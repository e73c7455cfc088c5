"""The Python that builds FHIR resources.

It is deliberately not called ``fhir``: fhir.resources installs a regular
package named ``fhir`` and a project package of that name would shadow it or
be shadowed depending on how the code runs. The top-level ``fhir/`` folder
holds data only (profiles, code maps, examples) and has no ``__init__.py``.
"""
