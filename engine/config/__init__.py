"""channels.toml: configuration, its secrets and its lint.

``schema`` (the typed document, ``load_config``, ``lint_text``), ``base`` (shared field types
and host/port and file checks), ``secrets`` (``*_env``/``*_file`` secrets), ``inference`` and
``results`` (the model, route and escalation sections), ``topology`` (problems across
sections), ``rules`` (channel filters and routes) and ``tomlindex`` (the line of each key,
for ``file:line: key: message``).
"""
