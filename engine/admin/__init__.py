"""Admin API, dashboard, metrics and health, served by the engine (``[admin]`` in channels.toml).

Modules: ``server`` (lifecycle), ``app`` (aiohttp app, authentication and authorization),
``routing`` (route-module, panel and timeline registry), ``openapi``, ``auth`` (users,
tokens, roles), ``policy`` (the credential policy), ``firstrun`` (the generated admin
password), ``sessions``, ``throttle`` (the login brake), ``audit``, ``phi`` (masking for
viewers; the message viewer's layers come from the registered ``message_layer`` view,
``mappings.hl7v2.view``), ``stats`` (sampling),
``views`` (store reads), and the ``routes_*`` modules. ``python -m engine.admin`` hashes
passwords and makes tokens.

Event codes (ADM-xxx): 101 listening, 102 stopped, 110 statistics refresh failed,
201 login, 202 login refused, 203 login throttled, 204 logout, 300 audited action,
590 request failed unexpectedly, 601 weak credentials on loopback, 602 the first-run admin
password file (its path, never the password), 603 request body too slow, 701 audit entry
not written (request refused).
"""

from engine.admin.server import AdminServer

__all__ = ["AdminServer"]
