"""llmos: a package manager and runtime for knowledge libraries on local LLMs."""

__version__ = "0.1.0"

#: Version of the ``--json`` envelope.  Bump only on purpose (see tests/test_json_contract.py).
JSON_SCHEMA = "llmos/v1"
