"""Generators of hostile package archives (issue 11): small code, no binary blobs.

Each generator writes one file and returns its path.  Tar headers are made
by hand (``header``) so that they can say what no honest writer says;
gzip streams are made by ``gzip_stream``, which can repeat one compressed
chunk (a deflate block after a full flush does not depend on what came
before), so a 1.5 GB member costs 1.5 MB of disk and well under a second
to generate.  ``CORPUS`` names every generator with the class it tries.
"""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import tomli_w

BLOCK = 512
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40


# ---------------------------------------------------------------- building blocks


def _octal(n: int, width: int) -> bytes:
    return (b"%0*o" % (width - 1, n)) + b"\0"


def _base256(n: int, width: int) -> bytes:
    return b"\x80" + n.to_bytes(width - 1, "big")


def header(
    name: bytes | str,
    size: int = 0,
    typeflag: bytes = b"0",
    *,
    mode: int = 0o644,
    size_field: bytes | None = None,
    magic: bytes = b"ustar\x0000",
    prefix: bytes = b"",
    linkname: bytes = b"",
    extra: dict[int, bytes] | None = None,
    checksum: bytes | None = None,
) -> bytes:
    """One 512-byte tar header; ``size_field``/``extra``/``checksum`` override what honest writers put there."""
    name_b = name.encode() if isinstance(name, str) else name
    buf = bytearray(BLOCK)
    buf[0:100] = name_b[:100].ljust(100, b"\0")
    buf[100:108] = _octal(mode, 8)
    buf[108:116] = _octal(0, 8)
    buf[116:124] = _octal(0, 8)
    if size_field is None:
        size_field = _octal(size, 12) if size < 8**11 else _base256(size, 12)
    buf[124:136] = size_field.ljust(12, b"\0")[:12]
    buf[136:148] = _octal(0, 12)
    buf[156:157] = typeflag
    buf[157:257] = linkname[:100].ljust(100, b"\0")
    buf[257:265] = magic.ljust(8, b"\0")[:8]
    buf[345:500] = prefix[:155].ljust(155, b"\0")
    for off, data in (extra or {}).items():
        buf[off : off + len(data)] = data
    buf[148:156] = b" " * 8
    buf[148:156] = checksum if checksum is not None else b"%06o\0 " % sum(buf)
    return bytes(buf)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def member(name: bytes | str, data: bytes, typeflag: bytes = b"0", **kw) -> bytes:
    return header(name, len(data), typeflag, **kw) + pad(data)


def pax_record(key: str, value: str | bytes) -> bytes:
    v = value.encode() if isinstance(value, str) else value
    body = b" " + key.encode() + b"=" + v + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n = len(str(n).encode()) + len(body)
    return str(n).encode() + body


def pax(records: dict[str, str | bytes], typeflag: bytes = b"x") -> bytes:
    data = b"".join(pax_record(k, v) for k, v in records.items())
    return member("././@PaxHeader", data, typeflag)


END = bytes(2 * BLOCK)


def manifest(files: dict[str, bytes] | dict[str, tuple[int, str]], *, name: str = "evil", version: str = "1.0.0") -> bytes:
    """An archive manifest (``llmos.toml`` with ``[files]``) for ``files`` (bytes, or (size, sha256))."""
    recs = {}
    for k, v in files.items():
        if isinstance(v, bytes):
            recs[k] = {"sha256": hashlib.sha256(v).hexdigest(), "size": len(v)}
        else:
            recs[k] = {"sha256": v[1], "size": v[0]}
    data = {
        "schema": 1,
        "package": {
            "name": name,
            "version": version,
            "kind": "library",
            "summary": "hostile test package",
            "license": "MIT",
            "maintainer": "T <t@example.org>",
        },
        "files": recs,
    }
    return tomli_w.dumps(data).encode()


def tar_bytes(files: dict[str, bytes], *, name: str = "evil", version: str = "1.0.0") -> bytes:
    """A valid plain tar of a package holding ``files`` (written by tarfile, as ``llmos build`` does)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for n, d in [("llmos.toml", manifest(files, name=name, version=version)), *files.items()]:
            ti = tarfile.TarInfo(n)
            ti.size = len(d)
            tf.addfile(ti, io.BytesIO(d))
    return buf.getvalue()


def gzip_stream(parts: Iterable[bytes | tuple[bytes, int]], *, level: int = 9) -> Iterable[bytes]:
    """Gzip ``parts``; ``(chunk, n)`` stands for ``chunk`` repeated n times (compressed once, emitted n times)."""
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    crc, total = 0, 0
    for part in parts:
        if isinstance(part, tuple):
            chunk, n = part
            yield c.flush(zlib.Z_FULL_FLUSH)
            block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
            for _ in range(n):
                yield block
                crc = zlib.crc32(chunk, crc)
            total += len(chunk) * n
        else:
            yield c.compress(part)
            crc = zlib.crc32(part, crc)
            total += len(part)
    yield c.flush()
    yield struct.pack("<II", crc, total & 0xFFFFFFFF)


def write(path: Path, parts: Iterable[bytes]) -> Path:
    with open(path, "wb") as fh:
        for p in parts:
            fh.write(p)
    return path


def gz(path: Path, parts: Iterable[bytes | tuple[bytes, int]], *, level: int = 9) -> Path:
    return write(path, gzip_stream(parts, level=level))


def zero_sha(n: int) -> str:
    """sha256 of ``n`` zero bytes (computed in 1 MiB steps)."""
    h = hashlib.sha256()
    z = bytes(MiB)
    for _ in range(n // MiB):
        h.update(z)
    h.update(bytes(n % MiB))
    return h.hexdigest()


GOOD = {"a.txt": b"hello\n"}


def _head(files: dict | None = None) -> bytes:
    m = manifest(files if files is not None else GOOD)
    return member("llmos.toml", m)


# ---------------------------------------------------------------- the corpus


def sparse_gnu_bad_map(p: Path) -> Path:
    """PAX GNU sparse 0.1 with a map that is not numbers (tarfile: ValueError invalid literal for int())."""
    recs = {"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.name": "a.txt", "GNU.sparse.realsize": "6", "GNU.sparse.map": "x,y"}
    return gz(p, [_head(), pax(recs), member("a.txt", b"hello\n"), END])


def sparse_gnu_bad_numblocks(p: Path) -> Path:
    """PAX GNU sparse 1.0 whose in-data map is garbage."""
    recs = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "a.txt", "GNU.sparse.realsize": "6"}
    return gz(p, [_head(), pax(recs), member("a.txt", pad(b"zz\nqq\n") + b"hello\n"), END])


def sparse_negative_size(p: Path) -> Path:
    """GNU sparse 0.1 with a negative size (tarfile: ValueError read length must be non-negative)."""
    recs = {"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.name": "a.txt", "GNU.sparse.size": "-5", "GNU.sparse.map": "0,6"}
    return gz(p, [_head(), pax(recs), member("a.txt", b"hello\n"), END])


def sparse_negative_realsize(p: Path) -> Path:
    """GNU sparse 1.0 with a negative realsize (the same ValueError)."""
    recs = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "a.txt", "GNU.sparse.realsize": "-5"}
    return gz(p, [_head(), pax(recs), member("a.txt", pad(b"1\n0\n6\n") + b"hello\n"), END])


def sparse_old_gnu_type_s(p: Path) -> Path:
    """Old GNU sparse member (type S) with a malformed sparse struct."""
    h = header("a.txt", 6, b"S", magic=b"ustar  \0", extra={386: b"zz" * 6, 483: b"notoctal"})
    return gz(p, [_head(), h, pad(b"hello\n"), END])


def sparse_terabyte(p: Path) -> Path:
    """1 TiB declared by a GNU sparse member in a few hundred bytes (tarfile: half an hour of zeros)."""
    recs = {"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.name": "a.txt", "GNU.sparse.realsize": str(TiB), "GNU.sparse.map": f"{TiB - 6},6"}
    return gz(p, [_head(), pax(recs), member("a.txt", b"hello\n"), END])


def sparse_terabyte_type_s(p: Path) -> Path:
    """Old GNU type S with realsize 1 TiB (base-256) and one 6-byte block at the end."""
    extra = {386: _octal(TiB - 6, 12) + _octal(6, 12), 483: _base256(TiB, 12)}
    h = header("a.txt", 6, b"S", magic=b"ustar  \0", extra=extra)
    return gz(p, [_head({"a.txt": (TiB, zero_sha(0))}), h, pad(b"hello\n"), END])


def declared_terabyte(p: Path) -> Path:
    """A plain member declaring 1 TiB (base-256 size) in a tiny archive."""
    return gz(p, [_head({"a.txt": (TiB, "0" * 64)}), header("a.txt", TiB), b"hello", END])


def longname_bomb(p: Path, size: int = 1536 * MiB) -> Path:
    """A GNU longname header of 1.5 GB in a ~1.5 MB archive (tarfile reads it whole into memory)."""
    chunk = b"a" * MiB
    return gz(
        p,
        [
            _head(),
            header("././@LongLink", size, b"L", magic=b"ustar  \0"),
            (chunk, size // MiB),
            pad(b"\0") if size % BLOCK else b"",
            member("a.txt", b"hello\n"),
            END,
        ],
    )


def pax_bomb(p: Path, size: int = 1536 * MiB) -> Path:
    """A PAX header holding one 1.5 GB ``comment`` record, in a ~1.5 MB archive."""
    n = size // MiB
    body_len = n * MiB
    prefix = b" comment="
    digits = len(str(body_len + len(prefix) + 1 + 12))
    total = digits + len(prefix) + body_len + 1
    rec_head = str(total).encode() + prefix
    return gz(
        p,
        [_head(), header("././@PaxHeader", total, b"x"), rec_head, (b"c" * MiB, n), b"\n" + bytes(-total % BLOCK), member("a.txt", b"hello\n"), END],
    )


def gzip_bomb(p: Path, size: int = 2 * GiB) -> Path:
    """A ~2 MB archive whose one member is 2 GiB of zeros, honestly declared in the manifest."""
    return gz(p, [_head({"a.bin": (size, zero_sha(size))}), header("a.bin", size), (bytes(MiB), size // MiB), END])


def gzip_bomb_lying(p: Path, size: int = 2 * GiB) -> Path:
    """The manifest says 6 bytes; the member header says 2 GiB of zeros."""
    return gz(p, [_head({"a.bin": b"hello\n"}), header("a.bin", size), (bytes(MiB), size // MiB), END])


def gzip_bomb_padding(p: Path, size: int = 2 * GiB) -> Path:
    """A valid small archive followed by 2 GiB of zero padding after the end-of-archive blocks."""
    return gz(p, [_head(), member("a.txt", b"hello\n"), END, (bytes(MiB), size // MiB)])


def gzip_no_trailer(p: Path) -> Path:
    data = b"".join(gzip_stream([_head(), member("a.txt", b"hello\n"), END]))
    p.write_bytes(data[:-8])
    return p


def gzip_short_trailer(p: Path) -> Path:
    data = b"".join(gzip_stream([_head(), member("a.txt", b"hello\n"), END]))
    p.write_bytes(data[:-3])
    return p


def gzip_bad_crc(p: Path) -> Path:
    data = bytearray(b"".join(gzip_stream([_head(), member("a.txt", b"hello\n"), END])))
    data[-8] ^= 0xFF
    p.write_bytes(bytes(data))
    return p


def gzip_bad_length(p: Path) -> Path:
    data = bytearray(b"".join(gzip_stream([_head(), member("a.txt", b"hello\n"), END])))
    data[-1] ^= 0x01
    p.write_bytes(bytes(data))
    return p


def gzip_trailing_garbage(p: Path) -> Path:
    data = b"".join(gzip_stream([_head(), member("a.txt", b"hello\n"), END]))
    p.write_bytes(data + b"hidden payload")
    return p


def tar_trailing_garbage(p: Path) -> Path:
    return gz(p, [_head(), member("a.txt", b"hello\n"), END, pad(b"hidden payload")])


def manifest_too_big(p: Path) -> Path:
    """A 17 MiB llmos.toml (mostly a comment): refused before it is read."""
    size = 17 * MiB
    return gz(p, [header("llmos.toml", size), (b"#" * MiB, size // MiB), END])


def manifest_too_many_pairs(p: Path) -> Path:
    """A 5 MB llmos.toml of 500k tiny unknown keys (a 990k-key one took 605 s to check): refused before parsing."""
    keys = b"".join(b"k%x=1\n" % i for i in range(500_000))
    m = manifest({"a.txt": b"hello\n"}).replace(b"[files", keys + b"[files", 1)
    return gz(p, [member("llmos.toml", m), member("a.txt", b"hello\n"), END])


def path_too_long(p: Path) -> Path:
    long = "d/" * 2500 + "a.txt"
    return gz(p, [_head({long: b"hello\n"}), pax({"path": long}), member("x", b"hello\n"), END])


def pax_path_traversal(p: Path) -> Path:
    return gz(p, [_head(), pax({"path": "../../evil.txt"}), member("a.txt", b"hello\n"), END])


def pax_global_path(p: Path) -> Path:
    return gz(p, [pax({"path": "llmos.toml"}, b"g"), _head(), member("a.txt", b"hello\n"), END])


def pax_malformed(p: Path) -> Path:
    return gz(p, [_head(), member("././@PaxHeader", b"99999 path=a.txt\n", b"x"), member("a.txt", b"hello\n"), END])


def pax_negative_size(p: Path) -> Path:
    return gz(p, [_head(), pax({"size": "-5"}), member("a.txt", b"hello\n"), END])


def base256_negative_size(p: Path) -> Path:
    return gz(p, [_head(), header("a.txt", size_field=b"\xff" * 12), pad(b"hello\n"), END])


def garbage_size_field(p: Path) -> Path:
    return gz(p, [_head(), header("a.txt", size_field=b"12x4\0"), pad(b"hello\n"), END])


def bad_checksum(p: Path) -> Path:
    return gz(p, [_head(), header("a.txt", 6, checksum=b"000000\0 "), pad(b"hello\n"), END])


def not_utf8_name(p: Path) -> Path:
    return gz(p, [_head(), header(b"a\xff.txt", 6), pad(b"hello\n"), END])


def symlink_member(p: Path) -> Path:
    return gz(p, [_head(), header("a.txt", 0, b"2", linkname=b"/etc/passwd"), END])


def hardlink_member(p: Path) -> Path:
    return gz(p, [_head(), header("a.txt", 0, b"1", linkname=b"llmos.toml"), END])


def device_member(p: Path) -> Path:
    return gz(p, [_head(), header("a.txt", 0, b"3"), END])


def longlink_member(p: Path) -> Path:
    return gz(p, [_head(), member("././@LongLink", b"/etc/passwd\0", b"K", magic=b"ustar  \0"), header("a.txt", 0, b"2"), END])


def dangling_extended_header(p: Path) -> Path:
    return gz(p, [_head(), pax({"path": "a.txt"}), END])


def directory_with_data(p: Path) -> Path:
    return gz(p, [_head(), header("d/", 6, b"5"), pad(b"hello\n"), member("a.txt", b"hello\n"), END])


def truncated_member(p: Path) -> Path:
    data = b"".join(gzip_stream([_head(), header("a.txt", 6000), b"x" * 100]))
    p.write_bytes(data)
    return p


def no_end_marker(p: Path) -> Path:
    return gz(p, [_head(), member("a.txt", b"hello\n")])


def plain_declared_beyond_file(p: Path) -> Path:
    """An uncompressed archive whose member declares more than the file holds."""
    return write(p, [_head({"a.bin": (5 * GiB, "0" * 64)}), header("a.bin", 5 * GiB), b"x" * 1000])


def plain_trailing_garbage(p: Path) -> Path:
    return write(p, [_head(), member("a.txt", b"hello\n"), END, pad(b"hidden payload")])


def manifest_declares_too_much(p: Path) -> Path:
    """Sizes in [files] far beyond what 100x the archive can unpack to."""
    return gz(p, [_head({"a.txt": b"hello\n", "b.bin": (50 * GiB, "0" * 64)}), member("a.txt", b"hello\n"), END])


def many_small_files(p: Path, n: int = 100_000) -> Path:
    """A valid archive of ``n`` tiny files (the quadratic-install case)."""
    files = {f"f/{i:06d}.txt": b"%d\n" % i for i in range(n)}
    m = manifest(files)
    parts: list[bytes] = [member("llmos.toml", m)]
    parts += [member(k, v) for k, v in files.items()]
    parts.append(END)
    return gz(p, parts, level=1)


def gz_level(parts: list[bytes], level: int) -> bytes:
    return b"".join(gzip_stream(parts, level=level))


#: name -> (generator, threat class); every one must be refused
CORPUS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "sparse_gnu_bad_map": (sparse_gnu_bad_map, "malformed sparse header"),
    "sparse_gnu_bad_numblocks": (sparse_gnu_bad_numblocks, "malformed sparse header"),
    "sparse_negative_size": (sparse_negative_size, "malformed sparse header"),
    "sparse_negative_realsize": (sparse_negative_realsize, "malformed sparse header"),
    "sparse_old_gnu_type_s": (sparse_old_gnu_type_s, "malformed sparse header"),
    "sparse_terabyte": (sparse_terabyte, "time bomb"),
    "sparse_terabyte_type_s": (sparse_terabyte_type_s, "time bomb"),
    "declared_terabyte": (declared_terabyte, "time bomb"),
    "longname_bomb": (longname_bomb, "memory bomb"),
    "pax_bomb": (pax_bomb, "memory bomb"),
    "gzip_bomb": (gzip_bomb, "decompression bomb"),
    "gzip_bomb_lying": (gzip_bomb_lying, "decompression bomb"),
    "gzip_bomb_padding": (gzip_bomb_padding, "decompression bomb"),
    "manifest_declares_too_much": (manifest_declares_too_much, "declared sizes"),
    "plain_declared_beyond_file": (plain_declared_beyond_file, "declared sizes"),
    "manifest_too_big": (manifest_too_big, "header/manifest limits"),
    "manifest_too_many_pairs": (manifest_too_many_pairs, "header/manifest limits"),
    "path_too_long": (path_too_long, "header/manifest limits"),
    "gzip_no_trailer": (gzip_no_trailer, "damaged gzip"),
    "gzip_short_trailer": (gzip_short_trailer, "damaged gzip"),
    "gzip_bad_crc": (gzip_bad_crc, "damaged gzip"),
    "gzip_bad_length": (gzip_bad_length, "damaged gzip"),
    "gzip_trailing_garbage": (gzip_trailing_garbage, "damaged gzip"),
    "tar_trailing_garbage": (tar_trailing_garbage, "malformed tar"),
    "plain_trailing_garbage": (plain_trailing_garbage, "malformed tar"),
    "pax_path_traversal": (pax_path_traversal, "unsafe member"),
    "pax_global_path": (pax_global_path, "malformed tar"),
    "pax_malformed": (pax_malformed, "malformed tar"),
    "pax_negative_size": (pax_negative_size, "malformed tar"),
    "base256_negative_size": (base256_negative_size, "malformed tar"),
    "garbage_size_field": (garbage_size_field, "malformed tar"),
    "bad_checksum": (bad_checksum, "malformed tar"),
    "not_utf8_name": (not_utf8_name, "malformed tar"),
    "symlink_member": (symlink_member, "unsafe member"),
    "hardlink_member": (hardlink_member, "unsafe member"),
    "device_member": (device_member, "unsafe member"),
    "longlink_member": (longlink_member, "unsafe member"),
    "dangling_extended_header": (dangling_extended_header, "malformed tar"),
    "directory_with_data": (directory_with_data, "malformed tar"),
    "truncated_member": (truncated_member, "truncated"),
    "no_end_marker": (no_end_marker, "truncated"),
}
