"""Property-based fuzzing of package archives and their manifests (issue 11).

Hypothesis mutates valid archives (gzip and plain tar) at the byte level,
at the tar-header level and at the manifest level.  The property, for
``llmos check`` and ``llmos install FILE`` alike: a documented exit code
(0 when the mutation left a valid package; check 10, install 5 or 6
otherwise), never exit 1 or a traceback, and after a failed install the
state (database rows and the store's files) is unchanged.

The example count is small by default; ``LLMOS_FUZZ_EXAMPLES=N`` runs more
(docs/security.md records the long runs).  Each example gets a fresh
``LLMOS_HOME`` (hypothesis runs many examples in one test function).
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import hostile
from tests.helpers.installtools import snapshot

EXAMPLES = int(os.environ.get("LLMOS_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=not os.environ.get("LLMOS_FUZZ_RANDOM"),
)

FILES = {"a.txt": b"hello\n" * 20, "docs/b.md": b"# b\n\ntext\n", "bin/tool.sh": b"#!/bin/sh\necho hi\n"}
PLAIN = hostile.tar_bytes(FILES)
GZ = gzip.compress(PLAIN, mtime=0)
DOCUMENTED_CHECK = {0, 10}
DOCUMENTED_INSTALL = {0, 5, 6}


def _check_both(cli, monkeypatch, data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="llmos-fuzz-") as td:
        home = Path(td) / "home"
        monkeypatch.setenv("LLMOS_HOME", str(home))
        path = Path(td) / "evil_1.0.0.llmos"
        path.write_bytes(data)
        r = cli("check", str(path))
        assert r.exit_code in DOCUMENTED_CHECK, r
        assert "Traceback" not in r.stderr
        r0 = cli("list")
        assert r0.exit_code == 0, r0
        before = snapshot(home)
        r = cli("install", "-y", str(path))
        assert r.exit_code in DOCUMENTED_INSTALL, r
        assert "Traceback" not in r.stderr
        if r.exit_code != 0:
            assert [ln for ln in r.stderr.splitlines() if ln.startswith("error")], r
            assert snapshot(home) == before


@pytest.fixture
def quiet_home(cli, monkeypatch):
    cli("source", "remove", "embedded")
    return monkeypatch


@FUZZ
@given(base=st.sampled_from([GZ, PLAIN]), edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6))
def test_byte_flips(cli, quiet_home, base, edits):
    data = bytearray(base)
    for where, value in edits:
        data[int(where * len(data))] = value
    _check_both(cli, quiet_home, bytes(data))


@FUZZ
@given(base=st.sampled_from([GZ, PLAIN]), start=st.floats(0, 1), length=st.integers(0, 4096), insert=st.binary(max_size=1024))
def test_splices(cli, quiet_home, base, start, length, insert):
    """Cut out a range and put other bytes in its place (truncation, insertion, garbage)."""
    i = int(start * len(base))
    _check_both(cli, quiet_home, base[:i] + insert + base[i + length :])


_FIELDS = {"name": (0, 100), "mode": (100, 8), "size": (124, 12), "typeflag": (156, 1), "linkname": (157, 100), "magic": (257, 8), "prefix": (345, 155)}


@FUZZ
@given(
    which=st.integers(0, 3),
    field=st.sampled_from(sorted(_FIELDS)),
    value=st.one_of(
        st.binary(max_size=155),
        st.sampled_from([b"\x80" + b"\xff" * 11, b"\xff" * 12, b"77777777777\0", b"-1", b"S", b"x", b"g", b"L", b"K", b"1", b"2", b"../x", b"/etc"]),
    ),
    fix_checksum=st.booleans(),
    compress=st.booleans(),
)
def test_header_fields(cli, quiet_home, which, field, value, fix_checksum, compress):
    """Overwrite one field of one of the first tar headers (checksum fixed up or not)."""
    data = bytearray(PLAIN)
    offsets = [o for o in range(0, len(data) - 512, 512) if data[o + 257 : o + 262] == b"ustar"]
    o = offsets[which % len(offsets)]
    off, width = _FIELDS[field]
    data[o + off : o + off + width] = value[:width].ljust(width, b"\0")
    if fix_checksum:
        data[o + 148 : o + 156] = b" " * 8
        data[o + 148 : o + 156] = b"%06o\0 " % sum(data[o : o + 512])
    raw = bytes(data)
    _check_both(cli, quiet_home, gzip.compress(raw, mtime=0) if compress else raw)


_TOML_VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.text(max_size=40),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


@FUZZ
@given(
    path=st.sampled_from(
        [
            "package.name",
            "package.version",
            "package.kind",
            "files",
            "files.a.txt",
            "files.a.txt.size",
            "files.a.txt.sha256",
            "files.../x",
            "files./abs",
            "schema",
            "package.depends",
        ]
    ),
    value=_TOML_VALUES,
    compress=st.booleans(),
)
def test_manifest_values(cli, quiet_home, path, value, compress):
    """Replace one manifest value (sizes, hashes, paths, names) and rebuild the archive around it."""
    import tomllib

    import tomli_w

    data = tomllib.loads(hostile.manifest(FILES).decode())
    keys = path.split(".", 2) if path.startswith("files.") else path.split(".")
    if path.startswith("files.") and len(keys) == 3 and keys[1] == "a":
        keys = ["files", "a.txt", keys[2][4:]] if keys[2].startswith("txt.") else ["files", "a.txt"]
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {}) if isinstance(node, dict) else node
    if isinstance(node, dict):
        node[keys[-1]] = value
    m = tomli_w.dumps(data).encode()
    raw = b"".join([hostile.member("llmos.toml", m), *(hostile.member(k, v) for k, v in FILES.items()), hostile.END])
    _check_both(cli, quiet_home, gzip.compress(raw, mtime=0) if compress else raw)
