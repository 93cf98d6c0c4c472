"""A small model hub for tests: the HTTP routes huggingface_hub's client uses to push and download models.

Started on a free loopback port; repositories live on disk under a temporary
folder, one JSON file per commit and one file per blob. Every file is uploaded
"regular" (base64 inside the commit), so no LFS or Xet storage is involved.
Routes: whoami, repo create, README metadata validation, preupload, commit,
branch create, model info (per revision), tree listing, and resolve (HEAD and
GET with ETag and commit headers).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

USER = "tester"


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


class Repos:
    """Repositories on disk: refs.json (branch -> commit), commits/<oid>.json, blobs/<git blob id>."""

    def __init__(self, root: Path):
        self.root = root
        self.lock = threading.Lock()

    def folder(self, repo_id: str) -> Path:
        folder = self.root / repo_id
        if not (folder / "refs.json").is_file():
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return folder

    def create(self, repo_id: str, private: bool, url: str) -> None:
        folder = self.root / repo_id
        if (folder / "refs.json").is_file():
            raise HubError(409, "You already created this model repo", url=url)
        (folder / "commits").mkdir(parents=True)
        (folder / "blobs").mkdir()
        (folder / "meta.json").write_text(json.dumps({"private": private}))
        first = self._write_commit(folder, {"parent": None, "message": "initial commit", "files": {}})
        (folder / "refs.json").write_text(json.dumps({"main": first}))

    def private(self, repo_id: str) -> bool:
        return json.loads((self.folder(repo_id) / "meta.json").read_text())["private"]

    def resolve(self, repo_id: str, revision: str) -> tuple[str, dict]:
        """(commit oid, commit) for a branch name or a commit oid."""
        folder = self.folder(repo_id)
        refs = json.loads((folder / "refs.json").read_text())
        oid = refs.get(revision, revision)
        path = folder / "commits" / f"{oid}.json"
        if not re.fullmatch(r"[0-9a-f]{40}", oid) or not path.is_file():
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return oid, json.loads(path.read_text())

    def blob(self, repo_id: str, blob_id: str) -> bytes:
        return (self.folder(repo_id) / "blobs" / blob_id).read_bytes()

    def commit(self, repo_id: str, branch: str, message: str, added: dict[str, bytes], deleted: list[str]) -> str:
        with self.lock:
            folder = self.folder(repo_id)
            parent, previous = self.resolve(repo_id, branch)
            files = dict(previous["files"])
            for path, content in added.items():
                blob_id = git_blob_id(content)
                (folder / "blobs" / blob_id).write_bytes(content)
                files[path] = blob_id
            for path in deleted:  # a file, or everything under a folder
                for name in [f for f in files if f == path or f.startswith(path.rstrip("/") + "/")]:
                    del files[name]
            oid = self._write_commit(folder, {"parent": parent, "message": message, "files": files})
            self._set_ref(folder, branch, oid)
            return oid

    def branch(self, repo_id: str, name: str, start: str) -> None:
        with self.lock:
            folder = self.folder(repo_id)
            if name in json.loads((folder / "refs.json").read_text()):
                raise HubError(409, f"Branch {name} already exists")
            self._set_ref(folder, name, self.resolve(repo_id, start)[0])

    @staticmethod
    def _write_commit(folder: Path, commit: dict) -> str:
        commit = {**commit, "time": time.time_ns()}
        oid = hashlib.sha1(json.dumps(commit, sort_keys=True).encode()).hexdigest()
        (folder / "commits" / f"{oid}.json").write_text(json.dumps(commit))
        return oid

    @staticmethod
    def _set_ref(folder: Path, name: str, oid: str) -> None:
        refs = json.loads((folder / "refs.json").read_text())
        refs[name] = oid
        (folder / "refs.json").write_text(json.dumps(refs))


class Handler(BaseHTTPRequestHandler):
    repos: Repos
    tokens: set[str]
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    # ---- plumbing ------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlparse(self.path).path
        self.body = self.rfile.read(int(self.headers.get("Content-Length", 0)))  # always drain: keep-alive
        try:
            self.user = self._authenticate()
            for pattern, handler in ROUTES[method]:
                match = re.fullmatch(pattern, path)
                if match:
                    return handler(self, *[unquote(g) if g else g for g in match.groups()])
            raise HubError(404, f"no route for {method} {path}")
        except HubError as error:
            headers = {"X-Error-Code": error.code} if error.code else {}
            self._send(error.status, {"error": str(error), **error.extra}, headers)

    def _authenticate(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if not header:
            return None
        if header.removeprefix("Bearer ") not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return USER

    def _require_user(self) -> None:
        if self.user is None:
            raise HubError(401, "You must be authenticated to do this")

    def _send(self, status: int, payload, headers: dict | None = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _readable(self, repo_id: str) -> None:
        if self.repos.private(repo_id) and self.user is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")

    # ---- routes --------------------------------------------------------------------------------
    def whoami(self):
        self._require_user()
        self._send(200, {"type": "user", "name": USER, "fullname": "Test User", "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}}})

    def create_repo(self):
        self._require_user()
        payload = json.loads(self.body)
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = f"http://{self.headers['Host']}/{repo_id}"
        self.repos.create(repo_id, payload.get("visibility") == "private", url)
        self._send(200, {"url": url, "name": repo_id})

    def validate_yaml(self):
        self._send(200, {"errors": [], "warnings": []})

    def preupload(self, repo_id: str, revision: str):
        self._require_user()
        self.repos.resolve(repo_id, revision)
        files = json.loads(self.body)["files"]
        self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in files]})

    def commit(self, repo_id: str, revision: str):
        self._require_user()
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        added, deleted = {}, []
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            elif line["key"] != "header":
                raise HubError(400, f"this test hub does not support '{line['key']}' operations")
        oid = self.repos.commit(repo_id, revision, header["summary"], added, deleted)
        self._send(200, {"commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/{oid}",
                         "commitOid": oid, "pullRequestUrl": None})

    def create_branch(self, repo_id: str, branch: str):
        self._require_user()
        body = self.body
        start = json.loads(body).get("startingPoint", "main") if body else "main"
        self.repos.branch(repo_id, branch, start)
        self._send(200, {})

    def model_info(self, repo_id: str, revision: str | None):
        self._readable(repo_id)
        oid, commit = self.repos.resolve(repo_id, revision or "main")
        self._send(200, {"id": repo_id, "modelId": repo_id, "sha": oid, "private": self.repos.private(repo_id),
                         "siblings": [{"rfilename": path} for path in sorted(commit["files"])], "tags": []})

    def tree(self, repo_id: str, revision: str, prefix: str | None):
        self._readable(repo_id)
        _, commit = self.repos.resolve(repo_id, revision)
        prefix = (prefix or "").strip("/")
        entries = []
        for path, blob_id in sorted(commit["files"].items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            size = len(self.repos.blob(repo_id, blob_id))
            entries.append({"type": "file", "oid": blob_id, "size": size, "path": path})
        self._send(200, entries)

    def resolve(self, repo_id: str, revision: str, path: str):
        self._readable(repo_id)
        oid, commit = self.repos.resolve(repo_id, revision)
        if path not in commit["files"]:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        blob_id = commit["files"][path]
        content = self.repos.blob(repo_id, blob_id)
        self._send(200, None, {"ETag": f'"{blob_id}"', "X-Repo-Commit": oid}, raw=content)


REPO = r"/api/models/([^/]+/[^/]+)"
ROUTES = {
    "GET": [(r"/api/whoami-v2", Handler.whoami),
            (REPO + r"(?:/revision/([^/]+))?", Handler.model_info),
            (REPO + r"/tree/([^/]+)(?:/(.*))?", Handler.tree),
            (r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", Handler.resolve)],
    "HEAD": [(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", Handler.resolve)],
    "POST": [(r"/api/repos/create", Handler.create_repo),
             (r"/api/validate-yaml", Handler.validate_yaml),
             (REPO + r"/preupload/([^/]+)", Handler.preupload),
             (REPO + r"/commit/([^/]+)", Handler.commit),
             (REPO + r"/branch/([^/]+)", Handler.create_branch)],
}


class LocalHub:
    """`with LocalHub(folder) as hub:` serves on hub.endpoint; hub.token is accepted for writes."""

    token = "hf_localTestToken0123456789abcdef"

    def __init__(self, folder: Path):
        handler = type("BoundHandler", (Handler,), {"repos": Repos(folder), "tokens": {self.token}})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "LocalHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
