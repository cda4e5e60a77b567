"""ed25519 keys, detached index signatures and the trust checks ``llmos update`` applies.

The model is apt's (``Signed-By``) with TUF's rollback and freeze checks; see
docs/security.md.

* ``llmos key generate NAME`` writes ``NAME.key`` (private, mode 0600) and
  ``NAME.pub`` under ``$LLMOS_HOME/keys`` (or ``--dir``).  A public key is the
  base64 of its 32 raw bytes; that string is what ``source add --key`` pins.
* ``index.json.sig`` sits next to ``index.json`` and signs its exact bytes::

      {"signatures": [{"keyid": "<16 hex>", "alg": "ed25519", "sig": "<base64>"}]}

  A list, so a publisher can rotate keys by signing with old and new for a while.
* ``check_index_trust`` is called by ``update`` before an index replaces the
  local copy: signature (when a key is pinned), unsigned policy, rollback and
  expiry.

PyNaCl is imported inside the functions that need it (never at CLI start-up).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos_cli.errors import NotFoundError, TrustError, UsageError, from_os_error
from llmos_cli.progress import NullReporter, Reporter

if TYPE_CHECKING:
    from llmos_cli.registry.index import Index
    from llmos_cli.state.db import SourceRow

KEY_TYPE = "llmos-ed25519-private"
SIG_ALG = "ed25519"
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# ---------------------------------------------------------------- keys


def key_id(public_raw: bytes) -> str:
    """Short, stable name of a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def decode_public_key(pubkey_b64: str) -> bytes:
    """The 32 raw bytes of a base64 public key; ``TrustError`` when it is not one."""
    try:
        raw = base64.b64decode(pubkey_b64.strip(), validate=True)
    except (binascii.Error, ValueError, AttributeError):
        raw = b""
    if len(raw) != 32:
        raise TrustError(
            f"{pubkey_b64!r} is not an ed25519 public key (base64 of 32 bytes expected)",
            "use the string printed by `llmos key generate`, or the path of its .pub file",
        )
    return raw


def generate_key(name: str, keys_dir: Path) -> tuple[Path, str]:
    """Create ``keys_dir/NAME.key`` (0600) and ``NAME.pub``; return (private path, public base64).

    Refuses to overwrite an existing key.
    """
    from nacl.signing import SigningKey

    if not _KEY_NAME_RE.match(name):
        raise UsageError(f"invalid key name {name!r}", "use letters, digits, '.', '_' and '-' (at most 64)")
    private_path = keys_dir / f"{name}{PRIVATE_SUFFIX}"
    public_path = keys_dir / f"{name}{PUBLIC_SUFFIX}"
    if private_path.exists() or public_path.exists():
        raise UsageError(f"key {name!r} already exists in {keys_dir}", "choose another name, or delete the old key files first")
    sk = SigningKey.generate()
    public_b64 = base64.b64encode(bytes(sk.verify_key)).decode()
    doc = {
        "type": KEY_TYPE,
        "name": name,
        "keyid": key_id(bytes(sk.verify_key)),
        "seed": base64.b64encode(bytes(sk)).decode(),
        "public": public_b64,
    }
    try:
        keys_dir.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never clobber a key created concurrently; 0600 from the start, never world-readable.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(doc, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        public_path.write_text(public_b64 + "\n")
    except FileExistsError:
        raise UsageError(f"key {name!r} already exists in {keys_dir}", "choose another name") from None
    except OSError as exc:
        raise from_os_error(exc, "writing the key") from exc
    return private_path, public_b64


def resolve_private_key(value: str | Path, keys_dir: Path) -> Path:
    """``--sign KEY``: a path to a ``.key`` file, or the name of a key in ``keys_dir``."""
    p = Path(value).expanduser()
    if p.is_file():
        return p
    named = keys_dir / f"{value}{PRIVATE_SUFFIX}"
    if named.is_file():
        return named
    raise NotFoundError(f"no signing key {str(value)!r} (looked for {p} and {named})", "create one with `llmos key generate NAME`")


def _load_signing_key(key_path: Path) -> Any:
    from nacl.signing import SigningKey

    try:
        doc = json.loads(Path(key_path).read_text())
        if doc.get("type") != KEY_TYPE:
            raise ValueError("not an llmos private key")
        return SigningKey(base64.b64decode(doc["seed"], validate=True))
    except OSError as exc:
        raise from_os_error(exc, f"reading the signing key {key_path}") from exc
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise TrustError(f"{key_path} is not an llmos private key ({exc})", "pass the .key file written by `llmos key generate`") from exc


def key_id_of_private(key_path: Path) -> str:
    """The key id of the public half of a private key file."""
    return key_id(bytes(_load_signing_key(key_path).verify_key))


# ---------------------------------------------------------------- signatures


def sign_index(index_bytes: bytes, key_path: Path) -> bytes:
    """Detached signature (the bytes of ``index.json.sig``) over the exact index bytes."""
    sk = _load_signing_key(key_path)
    sig = sk.sign(index_bytes).signature
    doc = {"signatures": [{"keyid": key_id(bytes(sk.verify_key)), "alg": SIG_ALG, "sig": base64.b64encode(sig).decode()}]}
    return (json.dumps(doc, indent=2) + "\n").encode()


def _parse_signatures(signature: bytes) -> list[dict]:
    try:
        doc = json.loads(signature)
        sigs = doc["signatures"]
        if not isinstance(sigs, list) or not all(isinstance(s, dict) for s in sigs):
            raise TypeError("signatures must be a list of objects")
        return sigs
    except (ValueError, KeyError, TypeError) as exc:
        raise TrustError(f"the index signature file is malformed ({exc})", "the registry is broken or tampered with; tell its publisher") from exc


def signature_key_ids(signature: bytes) -> list[str]:
    """Key ids named in a signature file (for messages; proves nothing)."""
    return sorted({str(s.get("keyid")) for s in _parse_signatures(signature)})


def verify_index(index_bytes: bytes, signature: bytes | None, pubkey_b64: str) -> None:
    """Check that ``signature`` holds a valid ed25519 signature of ``index_bytes`` by the pinned key.

    Raises ``TrustError`` for: no signature, a malformed one, one made by another
    key (wrong key), and one that does not verify (tampered index).
    """
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    raw_key = decode_public_key(pubkey_b64)
    kid = key_id(raw_key)
    if signature is None:
        raise TrustError(
            f"the index is not signed, but the source pins key {kid}",
            "the publisher must sign it (`llmos index DIR --sign KEY`); never remove --key to work around this",
        )
    sigs = _parse_signatures(signature)
    mine = [s for s in sigs if s.get("keyid") == kid and s.get("alg", SIG_ALG) == SIG_ALG]
    if not mine:
        others = ", ".join(signature_key_ids(signature)) or "none"
        raise TrustError(
            f"the index is signed by key {others}, not by the pinned key {kid}",
            "wrong key: check the --key given to `llmos source add` against the publisher's public key",
        )
    vk = VerifyKey(raw_key)
    for s in mine:
        try:
            vk.verify(index_bytes, base64.b64decode(str(s.get("sig", "")), validate=True))
            return
        except (BadSignatureError, binascii.Error, ValueError):
            continue
    raise TrustError(
        f"the index signature does not verify with the pinned key {kid}: the index was changed after it was signed",
        "the registry or the connection is tampered with; do not install from it until its publisher re-signs it",
    )


# ---------------------------------------------------------------- trust policy


def install_allowed(row: SourceRow) -> bool:
    """Whether packages of this source may be installed: a pinned key, or ``--allow-unsigned`` at ``source add``."""
    return bool(row.key) or bool(row.allow_unsigned)


def require_trusted_source(row: SourceRow) -> None:
    """``TrustError`` for a source with neither a pinned key nor ``--allow-unsigned``."""
    if not install_allowed(row):
        raise TrustError(
            f"source {row.name!r} has no pinned key and was not added with --allow-unsigned",
            f"re-add it with its publisher's key: `llmos source remove {row.name}` then "
            f"`llmos source add {row.name} {row.url} --key PUBKEY` (or --allow-unsigned to trust it without signatures)",
        )


def check_index_trust(
    row: SourceRow,
    index: Index,
    raw: bytes,
    sig: bytes | None,
    previous_version: int | None,
    reporter: Reporter = NullReporter(),
    *,
    now: datetime | None = None,
) -> None:
    """Decide whether ``update`` may accept this index for ``row`` (raises ``TrustError`` if not).

    * pinned key: a valid signature by that key is required (tampered index,
      wrong key and unsigned index are refused);
    * no key and no ``--allow-unsigned``: refused (apt refuses unsigned
      repositories at update time; nothing from them reaches search or install);
    * ``index.version`` lower than ``previous_version``: refused (rollback, a
      replayed older index);
    * ``index.expires`` in the past: a warning (freeze attack or a stale mirror).
    """
    if row.key:
        verify_index(raw, sig, row.key)
    else:
        require_trusted_source(row)
        if sig is not None:
            reporter.debug(f"source {row.name}: the index is signed but no key is pinned; signature not checked")
    if previous_version is not None and index.version < previous_version:
        raise TrustError(
            f"the index of source {row.name!r} has version {index.version}, older than version {previous_version} "
            "accepted before: refusing a rollback (an old index replayed)",
            f"if the publisher really reset the registry, remove and re-add the source `{row.name}`",
        )
    if index.is_expired(now):
        reporter.warn(
            f"the index of source {row.name!r} expired on {index.expires}: it may be stale, or frozen by an attacker; "
            "its packages stay usable, but ask the publisher to re-sign it"
        )
