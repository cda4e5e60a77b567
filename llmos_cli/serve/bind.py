"""Which addresses a server may bind without an API key (``llmos serve`` and ``--engine vllm``)."""

from __future__ import annotations

import ipaddress

from llmos_cli.errors import UsageError


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None, key_hint: str = "clients send Authorization: Bearer KEY") -> None:
    """Binding beyond loopback needs an API key."""
    if not is_loopback(host) and not api_key:
        raise UsageError(
            f"--host {host} is reachable from other machines; refusing to serve it without an API key",
            f"add --api-key KEY ({key_hint}), or bind 127.0.0.1",
        )
