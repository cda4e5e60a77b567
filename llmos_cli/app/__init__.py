"""Use cases: the orchestration the CLI (and the server) call.

Each module drives the domain packages below it and returns a result object;
none of them prints or exits.  ``install`` (plan and execute package changes),
``build`` and ``check`` (packages for CI), ``run`` with ``stages``, ``route``
and ``options`` (the ``llmos run`` pipeline), ``models`` (``import-model``).
"""
