"""Read a package archive (plain or gzip-compressed tar) once, linearly, within limits.

Python's ``tarfile`` is the wrong tool for archives from strangers: it reads
a whole PAX or GNU longname header into memory whatever its declared size
(a 1.5 GB header in a 1.5 MB archive), follows GNU sparse maps that declare
a terabyte in a few hundred bytes, raises ``ValueError`` on malformed sparse
fields, and its stream mode copies its whole buffer on every small read (an
install of many small files is quadratic).  So llmos reads the few tar
features ``llmos build`` and other tar writers use, and refuses the rest:

* the format is detected by magic bytes: gzip (``1f 8b``) or a plain POSIX
  or GNU tar (``ustar`` at offset 257);
* gzip is inflated with ``zlib`` in bounded steps; its CRC and length
  trailer are checked by zlib, and a missing trailer is refused;
* members are regular files and directories; PAX extended headers
  (``x``, and ``g`` with harmless keys only) and GNU longnames (``L``) are
  read only when their declared size is within ``Limits``; links, devices,
  FIFOs, sparse members (type ``S`` or ``GNU.sparse.*`` keys) and unknown
  types are refused;
* every declared size is checked before its bytes are read: against what
  the rest of the archive can hold (the ratio cap for compressed archives,
  the file size for plain ones), and by the callers against the manifest;
* every raw byte of the file is hashed as it is read, so the bytes checked
  and the bytes unpacked are the same bytes, from one file descriptor;
* after the end-of-archive block only zero padding may follow.

Errors are ``InvalidPackageError`` (exit 5) with one line naming the archive.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from llmos_cli.errors import InvalidPackageError, from_os_error
from llmos_cli.pkg.manifest import safe_relpath

BLOCK = 512
GZIP_MAGIC = b"\x1f\x8b"
_RAW_CHUNK = 1 << 20
_OUT_CHUNK = 1 << 20
_ZERO_BLOCK = bytes(BLOCK)
_OCTAL = re.compile(rb"[0-7]*")
#: PAX keys a global header may carry (anything else would change how members are read)
_GLOBAL_OK = {"comment", "charset", "hdrcharset", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname"}
_DAMAGED = "the archive is damaged or was not made by `llmos build`"


@dataclass(frozen=True)
class Limits:
    """Caps on what an archive may declare (documented in docs/security.md, "Limits")."""

    #: ``llmos.toml`` of the archive (100k files with short paths take about 11 MB; parsing 12 MiB of TOML takes ~250 MB)
    max_manifest: int = 12 << 20
    #: ``=`` signs in it (each key/value pair has one; 100k files take 300k): a cheap bound on what parsing it costs
    max_manifest_pairs: int = 400_000
    #: tar members (files and folders), extended headers not counted
    max_members: int = 250_000
    #: a member's path in bytes (after PAX ``path`` or a GNU longname)
    max_path: int = 4096
    #: one PAX extended header (``x`` or ``g``) in bytes
    max_pax: int = 64 << 10
    #: global PAX headers in one archive
    max_global: int = 16
    #: a compressed archive may unpack to at most ``max_ratio`` times its size ...
    max_ratio: int = 100
    #: ... or to ``ratio_floor`` bytes, whichever is more (tar padding makes small archives compress very well)
    ratio_floor: int = 64 << 20

    def unpacked_budget(self, archive_size: int, compressed: bool) -> int:
        """The most tar bytes an archive of ``archive_size`` bytes may hold."""
        if not compressed:
            return archive_size
        return max(self.ratio_floor, self.max_ratio * archive_size)


LIMITS = Limits()


def human(n: int) -> str:
    x = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if x < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{n} bytes"  # pragma: no cover


def _plain_relpath(p: str) -> str | None:
    """``safe_relpath`` without pathlib for the common case (a normalised relative path)."""
    if p and p[0] != "/" and "\\" not in p and "\0" not in p and all(part not in ("", ".", "..") for part in p.split("/")):
        return p
    return safe_relpath(p)


class _Raw:
    """Reads the archive file sequentially, hashing and counting every byte."""

    def __init__(self, fh: IO[bytes]):
        self.fh = fh
        self.h = hashlib.sha256()
        self.n = 0

    def read(self, size: int = _RAW_CHUNK) -> bytes:
        data = self.fh.read(size)
        if data:
            self.h.update(data)
            self.n += len(data)
        return data


@dataclass
class Entry:
    """One tar member: a regular file (``is_dir`` False) or a folder."""

    name: str
    size: int
    mode: int
    is_dir: bool


class TarStream:
    """One pass over an archive: ``for e in ts: ...`` (read file data with ``ts.read``), then ``ts.finish()``.

    ``label`` names the archive in messages.  Data not read by the consumer
    is skipped (read and hashed) when the next member is asked for.
    """

    def __init__(self, fh: IO[bytes], label: str, limits: Limits = LIMITS, *, archive_size: int | None = None):
        self.label = label
        self.limits = limits
        self.raw = _Raw(fh)
        if archive_size is None:
            try:
                archive_size = os.fstat(fh.fileno()).st_size
            except (OSError, io.UnsupportedOperation, AttributeError):
                archive_size = 0
        self.archive_size = archive_size
        first = self.raw.read(_RAW_CHUNK)
        if not first:
            raise self.bad("empty archive")
        self.compressed = first[:2] == GZIP_MAGIC
        if not self.compressed and first[257:262] != b"ustar":
            raise self.bad("not a valid .llmos archive (neither gzip nor tar)")
        self.budget = limits.unpacked_budget(max(archive_size, self.raw.n), self.compressed)
        self._z: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.compressed else None
        self._pending = first  # raw bytes not yet inflated (compressed) or not yet consumed (plain)
        self._raw_eof = False
        self._buf = b""
        self._pos = 0
        self.out = 0  # tar bytes produced so far
        self._left = 0  # data bytes of the current member not yet read
        self._pad = 0  # padding after it
        self.members = 0
        self._ended = False

    # -------------------------------------------------------- errors

    def bad(self, message: str, hint: str | None = None) -> InvalidPackageError:
        return InvalidPackageError(f"{self.label}: {message}", hint or _DAMAGED)

    # -------------------------------------------------------- the tar byte stream

    def _refill(self) -> bool:
        """Add bytes to the buffer; False at the end of the (decompressed) stream."""
        try:
            if not self.compressed:
                data = self._pending or self.raw.read(_RAW_CHUNK)
                self._pending = b""
                if not data:
                    return False
            else:
                data = b""
                while not data:
                    z = self._z
                    if z.unconsumed_tail:
                        data = z.decompress(z.unconsumed_tail, _OUT_CHUNK)
                    elif z.eof:
                        rest = z.unused_data or self._pending or self.raw.read(_RAW_CHUNK)
                        self._pending = b""
                        if not rest:
                            return False
                        if rest[:2] != GZIP_MAGIC and len(rest) >= 2:
                            raise self.bad("trailing data after the compressed stream")
                        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)  # another gzip member
                        data = self._z.decompress(rest, _OUT_CHUNK)
                    else:
                        chunk = self._pending or self.raw.read(_RAW_CHUNK)
                        self._pending = b""
                        if not chunk:
                            raise self.bad("truncated archive (the gzip stream or its CRC/size trailer is missing)")
                        data = z.decompress(chunk, _OUT_CHUNK)
        except zlib.error as exc:
            msg = str(exc)
            if "incorrect data check" in msg:
                raise self.bad("damaged archive (gzip CRC mismatch)") from None
            if "incorrect length check" in msg:
                raise self.bad("damaged archive (gzip length trailer mismatch)") from None
            raise self.bad(f"not a valid .llmos archive (gzip: {msg})") from None
        except OSError as exc:
            raise from_os_error(exc, f"reading {self.label}") from exc
        self.out += len(data)
        if self.out > self.budget:
            raise self.bad(
                f"unpacks to more than {human(self.budget)} ({self.limits.max_ratio}x its size of {human(self.archive_size)}): refused as a decompression bomb",
                "an archive may unpack to at most 100 times its size (see docs/security.md, Limits)",
            )
        rest = self._buf[self._pos :]
        self._buf = rest + data if rest else data
        self._pos = 0
        return True

    def _take(self, n: int) -> bytes:
        """Exactly ``n`` bytes (fewer only at the end of the stream)."""
        while len(self._buf) - self._pos < n:
            if not self._refill():
                break
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def _take_some(self, n: int) -> bytes:
        """Up to ``n`` bytes, at least one unless at the end (no joining of chunks)."""
        if self._pos >= len(self._buf) and not self._refill():
            return b""
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def _skip(self, n: int) -> None:
        while n > 0:
            got = self._take_some(min(n, _OUT_CHUNK))
            if not got:
                raise self.bad("truncated archive")
            n -= len(got)

    def remaining(self) -> int:
        """How many more tar bytes the archive can hold (within the budget / the file)."""
        if self.compressed:
            return self.budget - self.out + (len(self._buf) - self._pos)
        return max(self.archive_size - self.raw.n, 0) + len(self._pending) + (len(self._buf) - self._pos)

    # -------------------------------------------------------- member data

    def read(self, n: int = -1) -> bytes:
        """Data of the current member (up to ``n`` bytes; all that is left when ``n`` < 0)."""
        if self._left <= 0:
            return b""
        if n is None or n < 0:
            n = self._left
        out = self._take_some(min(n, self._left))
        if not out:
            raise self.bad("truncated archive")
        self._left -= len(out)
        return out

    def read_all(self) -> bytes:
        """The rest of the current member's data, whole (for small members such as the manifest)."""
        parts = []
        while self._left > 0:
            parts.append(self.read(self._left))
        return b"".join(parts)

    def _finish_member(self) -> None:
        if self._left:
            self._skip(self._left)
            self._left = 0
        if self._pad:
            pad = self._take(self._pad)
            if len(pad) != self._pad:
                raise self.bad("truncated archive")
            self._pad = 0

    # -------------------------------------------------------- headers

    def __iter__(self) -> Iterator[Entry]:
        pax: dict[str, str] = {}
        longname: str | None = None
        while True:
            self._finish_member()
            block = self._take(BLOCK)
            if len(block) < BLOCK:
                raise self.bad("truncated archive (no end-of-archive marker)")
            if block == _ZERO_BLOCK:
                if pax or longname is not None:
                    raise self.bad("an extended header is not followed by a member")
                self._ended = True
                return
            name, mode, size, typeflag = self._parse_header(block)
            if typeflag in (b"x", b"g", b"L"):
                limit = self.limits.max_path + 1 if typeflag == b"L" else self.limits.max_pax
                what = "GNU longname" if typeflag == b"L" else "PAX header"
                if size > limit:
                    raise self.bad(f"{what} of {human(size)} (the limit is {human(limit)})", "refused: an oversized header is a memory bomb")
                data = self._take(size)
                if len(data) != size:
                    raise self.bad("truncated archive")
                self._pad = -size % BLOCK
                if typeflag == b"L":
                    if longname is not None:
                        raise self.bad("two GNU longname headers for one member")
                    longname = self._text(data.split(b"\0", 1)[0], "GNU longname")
                elif typeflag == b"x":
                    if pax:
                        raise self.bad("two PAX headers for one member")
                    pax = self._parse_pax(data)
                else:
                    self._global_headers = getattr(self, "_global_headers", 0) + 1
                    if self._global_headers > self.limits.max_global:
                        raise self.bad(f"more than {self.limits.max_global} global PAX headers")
                    bad_keys = sorted(set(self._parse_pax(data)) - _GLOBAL_OK)
                    if bad_keys:
                        raise self.bad(f"global PAX header sets {bad_keys[0]!r} (refused)")
                continue
            if "path" in pax:
                name = pax["path"]
            elif longname is not None:
                name = longname
            if "size" in pax:
                size = self._pax_size(pax["size"])
            pax, longname = {}, None
            entry = self._entry(name, mode, size, typeflag)
            self.members += 1
            if self.members > self.limits.max_members:
                raise self.bad(f"more than {self.limits.max_members} members", "see docs/security.md, Limits")
            if not entry.is_dir:
                if size > self.remaining():
                    raise self.bad(
                        f"member {name!r} declares {human(size)}, more than the archive can hold",
                        "refused before reading it: the archive is damaged or hostile",
                    )
                self._left = size
                self._pad = -size % BLOCK
            yield entry

    def _entry(self, raw_name: str, mode: int, size: int, typeflag: bytes) -> Entry:
        if len(raw_name.encode("utf-8", "surrogateescape")) > self.limits.max_path:
            raise self.bad(f"member path of {len(raw_name)} characters (the limit is {self.limits.max_path} bytes)")
        is_dir = typeflag == b"5" or (typeflag in (b"0", b"\0") and raw_name.endswith("/"))
        rel = raw_name[2:] if raw_name.startswith("./") else raw_name
        name = _plain_relpath(rel.rstrip("/") if is_dir else rel)
        if name is None or name != rel.rstrip("/"):
            raise self.bad(f"unsafe member path {raw_name!r} (absolute, '..' or not normalised)", "refusing to unpack it: possible path traversal")
        if typeflag in (b"1", b"2", b"K"):
            raise self.bad(f"member {raw_name!r} is a link (refused)", "archives may hold only regular files")
        if typeflag == b"S":
            raise self.bad(f"member {raw_name!r} is not a regular file (sparse; refused)", "archives may hold only regular files")
        if typeflag in (b"3", b"4", b"6"):
            raise self.bad(f"member {raw_name!r} is not a regular file (a device or FIFO; refused)", "archives may hold only regular files")
        if typeflag not in (b"0", b"\0", b"5"):
            raise self.bad(f"member {raw_name!r} is not a regular file (tar type {typeflag!r}; refused)", "archives may hold only regular files")
        if is_dir:
            if size:
                raise self.bad(f"folder member {raw_name!r} declares {size} bytes of data")
            return Entry(name, 0, mode, True)
        return Entry(name, size, mode, False)

    def _text(self, raw: bytes, what: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.bad(f"{what} is not UTF-8") from None

    def _num(self, field: bytes, what: str) -> int:
        if field[:1] in (b"\x80", b"\xff"):  # GNU base-256
            if field[:1] == b"\xff":
                raise self.bad(f"negative {what} in a tar header")
            return int.from_bytes(field[1:], "big")
        digits = field.replace(b"\0", b" ").strip(b" ")
        if not _OCTAL.fullmatch(digits):
            raise self.bad(f"malformed {what} field in a tar header")
        return int(digits, 8) if digits else 0

    def _parse_header(self, block: bytes) -> tuple[str, int, int, bytes]:
        magic = block[257:263]
        if magic not in (b"ustar\x00", b"ustar "):
            raise self.bad("not a valid .llmos archive (no tar header where one should be)")
        stored = self._num(block[148:156], "checksum")
        unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
        if stored != unsigned:
            signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b >= 128)
            if stored != signed:
                raise self.bad("tar header checksum mismatch")
        mode = self._num(block[100:108], "mode")
        size = self._num(block[124:136], "size")
        name = block[0:100].split(b"\0", 1)[0]
        if magic == b"ustar\x00":
            prefix = block[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        return self._text(name, "member path"), mode, size, block[156:157]

    def _parse_pax(self, data: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        pos = 0
        while pos < len(data):
            if data[pos] == 0:  # NUL padding ends the records
                if data[pos:].strip(b"\0"):
                    raise self.bad("malformed PAX header")
                break
            sp = data.find(b" ", pos, pos + 21)
            length_txt = data[pos:sp] if sp > pos else b""
            if not length_txt.isdigit():
                raise self.bad("malformed PAX header")
            length = int(length_txt)
            end = pos + length
            if length <= sp - pos + 1 or end > len(data) or data[end - 1 : end] != b"\n":
                raise self.bad("malformed PAX header")
            key, eq, value = data[sp + 1 : end - 1].partition(b"=")
            if not eq:
                raise self.bad("malformed PAX header")
            k = self._text(key, "PAX key")
            if k.startswith("GNU.sparse"):
                raise self.bad("sparse member (GNU.sparse PAX keys) refused", "archives may hold only regular files")
            out[k] = self._text(value, f"PAX value of {k!r}")
            pos = end
        return out

    def _pax_size(self, text: str) -> int:
        if not text.isascii() or not text.isdigit():
            raise self.bad(f"malformed PAX size {text[:40]!r}")
        if len(text) > 20:
            raise self.bad("PAX size too large")
        return int(text)

    # -------------------------------------------------------- end

    def finish(self) -> tuple[str, int]:
        """After the last member: check the padding and the gzip trailer; (sha256, size) of the whole file."""
        if not self._ended:
            for _ in self:
                pass
        while True:
            rest = self._buf[self._pos :]
            self._buf, self._pos = b"", 0
            if rest.strip(b"\0"):
                raise self.bad("trailing data after the end of the archive")
            if not self._refill():
                break
        try:
            while self.raw.read(_RAW_CHUNK):
                pass
        except OSError as exc:
            raise from_os_error(exc, f"reading {self.label}") from exc
        return self.raw.h.hexdigest(), self.raw.n


class EntryReader(io.RawIOBase):
    """A file-like view of the current member's data (for ``Store.add_stream`` and hashing readers)."""

    def __init__(self, ts: TarStream):
        self.ts = ts

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        return self.ts.read(size if size is not None else -1)

    def readinto(self, b: Any) -> int:  # type: ignore[override]
        data = self.ts.read(len(b))
        b[: len(data)] = data
        return len(data)
