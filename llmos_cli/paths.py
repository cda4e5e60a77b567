"""Where llmos keeps its state.

``LLMOS_HOME`` overrides everything; otherwise platformdirs' user data dir
(``~/.local/share/llmos`` on Linux).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def db(self) -> Path:
        return self.home / "state.db"

    @property
    def lock(self) -> Path:
        return self.home / "lock"

    @property
    def store(self) -> Path:
        """Content-addressed store of installed payload files."""
        return self.home / "store"

    @property
    def store_lock(self) -> Path:
        """Readers (``verify``) hold it shared, garbage collection exclusive."""
        return self.home / "store.lock"

    @property
    def staging(self) -> Path:
        return self.home / "staging"

    @property
    def lists(self) -> Path:
        """Local copies of each source's index (apt's /var/lib/apt/lists)."""
        return self.home / "lists"

    @property
    def cache(self) -> Path:
        """Download cache shared between installs."""
        return self.home / "cache"

    @property
    def keys(self) -> Path:
        return self.home / "keys"


def default_home() -> Path:
    env = os.environ.get("LLMOS_HOME")
    if env:
        return Path(env).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_data_dir("llmos", appauthor=False))


def get_paths() -> Paths:
    return Paths(default_home())


def embedded_registry() -> Path:
    """The registry shipped with llmos: ``llmos_cli/_registry`` in a wheel, ``registry/`` in a checkout.

    ``LLMOS_EMBEDDED_REGISTRY`` points it elsewhere (a mirror, or an empty
    folder to hide the demo packages, as the test suite does).
    """
    override = os.environ.get("LLMOS_EMBEDDED_REGISTRY")
    if override:
        return Path(override).expanduser().absolute()
    here = Path(__file__).resolve().parent
    wheel = here / "_registry"
    if wheel.is_dir():
        return wheel
    return here.parent / "registry"
