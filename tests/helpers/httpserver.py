"""Loopback HTTP servers for the remote-registry tests (127.0.0.1 only, real sockets).

* ``RegistryServer(root)`` serves a folder like any static web server, with
  ``Range`` support and switches that make it misbehave on purpose:
  ``cut[path] = n`` (close the connection after n body bytes, once),
  ``stall[path] = n`` (send the file up to offset n, then go silent), ``extra[path] = k``
  (send k bytes more than the file holds, without a Content-Length),
  ``no_range`` (ignore Range), ``replace[path] = bytes`` (serve other bytes).
  ``requests`` logs ``(method, path, range header)``.
* ``FakeHub()`` speaks the few Hugging Face Hub endpoints that
  ``hf_hub_download`` and ``HfApi.create_commit`` use (resolve, preupload,
  commit, revision), keeping repositories and commits in memory.

Both run ``ThreadingHTTPServer`` in a daemon thread; use them as context managers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Server:
    handler: type[BaseHTTPRequestHandler]

    def __enter__(self):
        self._stop = threading.Event()
        outer = self

        class Handler(self.handler):  # type: ignore[misc,valid-type]
            server_obj = outer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass


# ---------------------------------------------------------------- static registry


class _RegistryHandler(_Quiet):
    server_obj: RegistryServer

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        srv = self.server_obj
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        srv.requests.append((self.command, rel, rng))
        path = (srv.root / rel).resolve()
        if rel in srv.replace:
            data = srv.replace[rel]
        elif srv.root.resolve() in path.parents and path.is_file():
            data = path.read_bytes()
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not srv.no_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        if rel in srv.extra:
            # more bytes than the file, close-delimited so only the stream can tell
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/*")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if not head:
                self.wfile.write(body + b"\0" * srv.extra[rel])
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if head:
            return
        if rel in srv.cut:
            n = srv.cut.pop(rel)
            self.wfile.write(body[:n])
            self.wfile.flush()
            self.close_connection = True
            return
        if rel in srv.stall:
            self.wfile.write(body[: max(0, srv.stall[rel] - start)])
            self.wfile.flush()
            srv._stop.wait(60)
            self.close_connection = True
            return
        self.wfile.write(body)


class RegistryServer(_Server):
    handler = _RegistryHandler

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str, str | None]] = []
        self.cut: dict[str, int] = {}
        self.stall: dict[str, int] = {}
        self.extra: dict[str, int] = {}
        self.replace: dict[str, bytes] = {}
        self.no_range = False

    def ranged(self, suffix: str) -> list[str]:
        """Range headers of the requests for a path ending with ``suffix``."""
        return [r for _m, p, r in self.requests if p.endswith(suffix) and r]


# ---------------------------------------------------------------- fake Hugging Face Hub

_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/(preupload|commit|revision)/([^/?]+)")


class _HubHandler(_Quiet):
    server_obj: FakeHub

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def do_HEAD(self):
        self._resolve(head=True)

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        m = _API.match(path)
        if m and m.group(3) == "revision":
            hub = self.server_obj
            repo = m.group(2)
            sha = hub.commit_of(repo, urllib.parse.unquote(m.group(4)))
            if sha is None:
                return self._json(404, {"error": "not found"}, {"X-Error-Code": "RevisionNotFound"})
            files = hub.commits[sha]
            return self._json(200, {"id": repo, "sha": sha, "siblings": [{"rfilename": f} for f in sorted(files)]})
        self._resolve(head=False)

    def _resolve(self, head: bool) -> None:
        hub = self.server_obj
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        hub.requests.append((self.command, path))
        m = _RESOLVE.match(path)
        if not m:
            return self._send(404, head=head)
        repo, rev, filename = m.group(2), m.group(3), m.group(4)
        if repo not in hub.branches:
            return self._send(404, headers={"X-Error-Code": "RepoNotFound"}, head=head)
        sha = hub.commit_of(repo, rev)
        if sha is None:
            return self._send(404, headers={"X-Error-Code": "RevisionNotFound"}, head=head)
        files = hub.commits[sha]
        if filename not in files:
            return self._send(404, headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}, head=head)
        data = files[filename]
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        start = 0
        rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if rng and not head:
            start = min(int(rng.group(1)), len(data))
        hdrs = {"X-Repo-Commit": sha, "ETag": etag, "Accept-Ranges": "bytes"}
        if start:
            hdrs["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._send(206 if start else 200, data[start:], hdrs, head=head)

    def do_POST(self):
        hub = self.server_obj
        path = urllib.parse.urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        m = _API.match(path)
        if not m:
            return self._json(404, {"error": "unknown endpoint"})
        repo, what = m.group(2), m.group(3)
        if repo not in hub.branches:
            return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if what == "preupload":
            files = json.loads(body)["files"]
            return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if what == "commit":
            branch = urllib.parse.unquote(m.group(4))
            parent = hub.commit_of(repo, branch)
            files = dict(hub.commits[parent]) if parent else {}
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "deletedFile":
                    files.pop(item["value"]["path"], None)
                elif item["key"] != "header":
                    return self._json(400, {"error": f"unsupported operation {item['key']}"})
            sha = hub.new_commit(repo, files, branch)
            return self._json(200, {"commitUrl": f"{hub.url}/{repo}/commit/{sha}", "commitOid": sha})
        return self._json(404, {"error": "unknown endpoint"})


class FakeHub(_Server):
    handler = _HubHandler

    def __init__(self) -> None:
        self.commits: dict[str, dict[str, bytes]] = {}
        self.branches: dict[str, dict[str, str]] = {}
        self.requests: list[tuple[str, str]] = []
        self._n = 0

    def create_repo(self, repo: str) -> None:
        """A new repository: one initial commit on ``main``, as the Hub makes."""
        if repo not in self.branches:
            self.new_commit(repo, {".gitattributes": b"*.llmos filter=lfs diff=lfs merge=lfs -text\n"})

    def new_commit(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        self._n += 1
        sha = hashlib.sha1(f"{repo}:{self._n}:{time.time()}".encode()).hexdigest()
        self.commits[sha] = dict(files)
        self.branches.setdefault(repo, {})[branch] = sha
        return sha

    def commit_of(self, repo: str, rev: str) -> str | None:
        if rev in self.branches.get(repo, {}):
            return self.branches[repo][rev]
        return rev if rev in self.commits else None
