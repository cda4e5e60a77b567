"""``hf``: a registry kept in a Hugging Face Hub repository (``hf://owner/repo[@revision]``).

The repository holds the same files as a registry folder (``index.json``,
``index.json.sig``, ``pool/*.llmos``).  Everything goes through
``huggingface_hub``: ``hf_hub_download`` with the pinned ``revision`` (a
branch, tag or commit), its cache (``HF_HOME``/``HF_HUB_CACHE``) and its
offline mode (``HF_HUB_OFFLINE=1`` serves from that cache, no network).
``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` are read
when a source is used, not when huggingface_hub was imported.

Archives are verified against the (signed) llmos index, whatever the Hub's
own checks said.  ``hf://datasets/owner/repo`` addresses a dataset repository.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos_cli.errors import IntegrityError, LlmosError, NetworkError, NotFoundError, UsageError
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.registry.index import INDEX_NAME, SIG_SUFFIX, IndexEntry
from llmos_cli.registry.sources import Source, verify_file

_REPO_TYPES = {"datasets": "dataset", "spaces": "space", "models": "model"}


@dataclass(frozen=True)
class HubLocation:
    repo_id: str
    repo_type: str = "model"
    revision: str | None = None

    @classmethod
    def parse(cls, url: str) -> HubLocation:
        """``hf://owner/repo``, ``hf://owner/repo@rev``, ``hf://datasets/owner/repo[@rev]``."""
        if not url.lower().startswith("hf://"):
            raise UsageError(f"{url!r} is not an hf:// URL", "use hf://owner/repo[@revision]")
        rest = url[5:].strip("/")
        revision = None
        if "@" in rest:
            rest, revision = rest.split("@", 1)
            revision = revision or None
        parts = rest.split("/")
        repo_type = "model"
        if len(parts) == 3 and parts[0] in _REPO_TYPES:
            repo_type = _REPO_TYPES[parts[0]]
            parts = parts[1:]
        if len(parts) != 2 or not all(parts):
            raise UsageError(f"{url!r} is not a Hub repository URL", "use hf://owner/repo[@revision]")
        return cls("/".join(parts), repo_type, revision)

    def __str__(self) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        return f"hf://{prefix}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def offline() -> bool:
    return _env_true("HF_HUB_OFFLINE")


def endpoint() -> str | None:
    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def cache_dir() -> str | None:
    """The Hub cache folder as the environment says now (None: huggingface_hub's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


@contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into llmos errors with a hint."""
    from huggingface_hub import errors as hf

    try:
        yield
    except LlmosError:
        raise
    except hf.RepositoryNotFoundError as exc:
        raise NotFoundError(f"{what}: no such Hub repository ({_first_line(exc)})", "check the hf:// URL, and HF_TOKEN for private repositories") from None
    except hf.RevisionNotFoundError:
        raise NotFoundError(f"{what}: no such revision on the Hub", "check the @revision of the source URL") from None
    except hf.LocalEntryNotFoundError:
        raise NetworkError(
            f"{what}: not in the local Hugging Face cache, and the Hub cannot be reached (offline)",
            "unset HF_HUB_OFFLINE and connect, or fetch it once while online",
        ) from None
    except hf.EntryNotFoundError:
        raise NotFoundError(f"{what}: no such file in the Hub repository", "run `llmos update`; the registry may have changed") from None
    except hf.OfflineModeIsEnabled:
        raise NetworkError(f"{what}: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE to reach the Hub") from None
    except (hf.HfHubHTTPError, OSError, ConnectionError) as exc:
        raise NetworkError(f"{what}: {_first_line(exc)}", "check the network, HF_ENDPOINT and HF_TOKEN") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _progress_class(reporter: Reporter, label: str) -> type:
    """A tqdm-shaped class that feeds huggingface_hub's byte counts to our reporter."""

    class _Bar:
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any) -> None:
            self._cm: Any = reporter.task(label, total=total, unit="bytes")
            self._task = self._cm.__enter__()
            if initial:
                self._task.advance(initial)

        def update(self, n: float = 1) -> None:
            self._task.advance(n)

        def close(self) -> None:
            if self._cm is not None:
                self._cm.__exit__(None, None, None)
                self._cm = None

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.close()

    return _Bar


def hub_download(loc: HubLocation, filename: str, *, reporter: Reporter = NullReporter(), missing_ok: bool = False) -> Path | None:
    """One file of the repository, through the Hub cache.  ``None`` if it does not exist and ``missing_ok``.

    Offline, a file the cache knows to be absent counts as missing; one the
    cache knows nothing about raises ``NetworkError``.
    """
    from huggingface_hub import errors as hf
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    kwargs: dict[str, Any] = dict(repo_id=loc.repo_id, filename=filename, repo_type=loc.repo_type, revision=loc.revision, cache_dir=cache_dir())
    with hub_errors(f"{loc} {filename}"):
        if offline():
            hit = try_to_load_from_cache(**kwargs)
            if isinstance(hit, str):
                return Path(hit)
            if hit is not None and missing_ok:  # cached "does not exist"
                return None
        extra: dict[str, Any] = {"endpoint": endpoint(), "local_files_only": offline()}
        if "tqdm_class" in inspect.signature(hf_hub_download).parameters:
            extra["tqdm_class"] = _progress_class(reporter, Path(filename).name)
        try:
            return Path(hf_hub_download(**kwargs, **extra))
        except hf.EntryNotFoundError as exc:
            if missing_ok and not isinstance(exc, hf.LocalEntryNotFoundError):
                return None
            raise


class HubSource(Source):
    """A registry in a Hugging Face Hub repository, pinned to a revision when the URL has ``@rev``."""

    @property
    def location(self) -> HubLocation:
        return HubLocation.parse(self.row.url)

    def uri(self, filename: str) -> str:
        """Where the Hub serves a file of the registry (for ``mirror --print-uris``)."""
        from huggingface_hub import hf_hub_url

        loc = self.location
        return hf_hub_url(loc.repo_id, filename, repo_type=loc.repo_type, revision=loc.revision, endpoint=endpoint())

    def fetch_index(self, reporter: Reporter = NullReporter()) -> tuple[bytes, bytes | None]:
        loc = self.location
        # a branch may have moved since the cached copy: ask the Hub (unless offline) for the index
        index_path = hub_download(loc, INDEX_NAME, reporter=reporter)
        sig_path = hub_download(loc, INDEX_NAME + SIG_SUFFIX, reporter=reporter, missing_ok=True)
        assert index_path is not None
        with hub_errors(f"{loc} {INDEX_NAME}"):
            raw = index_path.read_bytes()
            sig = sig_path.read_bytes() if sig_path is not None else None
        return raw, sig

    def fetch_archive(self, entry: IndexEntry, dest_dir: Path, reporter: Reporter = NullReporter()) -> Path:
        """The archive in the Hub cache (``dest_dir`` unused: the Hub cache is shared), verified against the index."""
        path = hub_download(self.location, entry.filename, reporter=reporter)
        assert path is not None
        try:
            verify_file(path, entry.size, entry.sha256, f"{entry.meta.id} from source {self.name}")
        except IntegrityError:
            # never keep bytes that failed the check: drop the cached blob and its snapshot link
            for p in {path.resolve(), path}:
                p.unlink(missing_ok=True)
            raise
        return path
