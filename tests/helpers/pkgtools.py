"""Helpers that write real package source folders for tests."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import tomli_w


def minimal_gguf(architecture: str = "llama", context_length: int = 2048, general_type: str = "model") -> bytes:
    """A valid GGUF v3 header with no tensors: readable by ``read_header`` but not runnable.

    Enough for packaging tests (``llmos build`` of a model reads the header);
    runtime tests need a real tiny model (tests/helpers/fixtures_models.py).
    """

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    kvs = [
        s("general.architecture") + struct.pack("<I", 8) + s(architecture),
        s("general.type") + struct.pack("<I", 8) + s(general_type),
        s(f"{architecture}.context_length") + struct.pack("<I", 4) + struct.pack("<I", context_length),
    ]
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)
    return out + b"\x00" * (-len(out) % 32)


def write_source(
    root: Path,
    name: str,
    version: str = "1.0.0",
    kind: str = "library",
    *,
    depends: list[str] | None = None,
    conflicts: list[str] | None = None,
    provides: list[str] | None = None,
    base: str | None = None,
    files: dict[str, bytes | str] | None = None,
    extra: dict[str, Any] | None = None,
    summary: str | None = None,
) -> Path:
    """Write ``root/<name>-<version>/llmos.toml`` plus payload files; return the folder."""
    folder = root / f"{name}-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    pkg: dict[str, Any] = {
        "name": name,
        "version": version,
        "kind": kind,
        "summary": summary or f"test package {name}",
        "license": "MIT",
        "maintainer": "Test <test@example.org>",
    }
    if depends:
        pkg["depends"] = depends
    if conflicts:
        pkg["conflicts"] = conflicts
    if provides:
        pkg["provides"] = provides
    if base:
        pkg["base"] = base
    data: dict[str, Any] = {"schema": 1, "package": pkg}
    files = dict(files or {})
    if kind == "model" and not (extra and "model" in extra):
        files.setdefault("model.gguf", minimal_gguf())
        data["model"] = {"file": "model.gguf"}
    if kind == "library" and not files and not extra:
        files["docs/readme.md"] = f"# {name}\n\nSome knowledge about {name}.\n"
        data["knowledge"] = {"documents": ["docs/*.md"]}
    if extra:
        data.update(extra)
    for rel, content in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    (folder / "llmos.toml").write_text(tomli_w.dumps(data))
    return folder
