"""A local, Hub-compatible HTTP server for tests (standard library only).

It speaks the part of the Hub protocol that `huggingface_hub` 2.x uses to create repositories, commit (files inline
in base64, or through LFS basic transfer for dataset shards), branch, and serve files, trees and repository info,
so that `push_to_hub`, `from_pretrained`, `pipeline` and `load_dataset` run for real against
`HF_ENDPOINT=http://127.0.0.1:PORT`. Repositories live in a folder: file contents under blobs/<sha256>, commits
and branches in memory. Only 127.0.0.1 is ever bound.

Fault injection for tests: `fail_commits` (the next N commits answer 500) and `stop()` / `start()` on the same
port with the same repositories.
"""

import base64
import hashlib
import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

_commit_counter = itertools.count()


def new_sha(*parts: str) -> str:
    return hashlib.sha1("|".join([*parts, str(next(_commit_counter))]).encode()).hexdigest()


class Repo:
    def __init__(self, repo_type: str, repo_id: str, private: bool):
        self.type, self.id, self.private = repo_type, repo_id, private
        initial = new_sha(repo_type, repo_id, "initial")
        self.commits: dict[str, dict] = {initial: {"files": {}, "parent": None, "title": "initial commit"}}
        self.branches = {"main": initial}

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class HubState:
    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.Lock()
        self.fail_commits = 0
        self.requests: list[tuple[str, str]] = []
        self.authorizations: set[str] = set()

    def store(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (self.blobs / digest).write_bytes(data)
        return digest

    def read(self, digest: str) -> bytes:
        return (self.blobs / digest).read_bytes()


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass made for each server

    def log_message(self, *args):  # keep test output quiet
        pass

    # --- plumbing -------------------------------------------------------------------------------------------------
    def _send(self, status: int, body=b"", headers: dict | None = None, content_type="application/json"):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, headers: dict | None = None):
        self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _repo(self, kind: str, repo_id: str) -> Repo | None:
        repo_type = {"models": "model", "datasets": "dataset", "spaces": "space"}.get(kind, kind)
        return self.state.repos.get((repo_type, repo_id))

    def _route(self):
        parts = urlsplit(self.path)
        self.state.requests.append((self.command, parts.path))
        if self.headers.get("Authorization"):
            self.state.authorizations.add(self.headers["Authorization"])
        return unquote(parts.path), parse_qs(parts.query)

    # --- verbs ----------------------------------------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path, query = self._route()
        if path == "/api/whoami-v2":
            return self._send(200, {"name": "tester", "type": "user", "orgs": []})
        match = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if match:
            return self._tree(*match.groups(), query)
        match = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/revision/(.+))?", path)
        if match:
            return self._info(*match.groups())
        match = re.fullmatch(r"/(datasets/|spaces/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match:
            kind = (match.group(1) or "models/").rstrip("/")
            return self._resolve(kind, match.group(2), match.group(3), match.group(4))
        self._error(404, "NotFound", f"no route for GET {path}")

    def do_POST(self):
        path, _ = self._route()
        body = self._body()
        if path == "/api/repos/create":
            return self._create(json.loads(body))
        if path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        match = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)", path)
        if match:
            kind, repo_id, action, revision = match.groups()
            return getattr(self, f"_{action}")(kind, repo_id, revision, body)
        match = re.fullmatch(r"/(datasets/|spaces/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
        if match:
            return self._lfs_batch(json.loads(body))
        self._error(404, "NotFound", f"no route for POST {path}")

    def do_PUT(self):
        path, _ = self._route()
        match = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", path)
        if not match:
            return self._error(404, "NotFound", f"no route for PUT {path}")
        data = self._body()
        if hashlib.sha256(data).hexdigest() != match.group(1):
            return self._error(400, "BadRequest", "uploaded bytes do not match their sha256")
        self.state.store(data)
        self._send(200, {})

    # --- endpoints ------------------------------------------------------------------------------------------------
    def _create(self, request: dict):
        repo_type = request.get("type") or "model"
        namespace = request.get("organization") or "tester"
        repo_id = f"{namespace}/{request['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = {"url": f"http://{self.headers['Host']}/{prefix}{repo_id}", "name": repo_id}
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:
                return self._send(409, {**url, "error": "You already created this repo"})
            self.state.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, bool(request.get("private")))
        self._send(200, url)

    def _at_revision(self, kind: str, repo_id: str, revision: str) -> tuple[Repo | None, str | None]:
        """The repository and the commit a revision names; (.., None) after answering 404 when there is none."""
        repo = self._repo(kind, repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None, None
        sha = repo.resolve(revision)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo, sha

    def _info(self, kind: str, repo_id: str, revision: str | None):
        repo, sha = self._at_revision(kind, repo_id, revision or "main")
        if sha is None:
            return None
        files = repo.commits[sha]["files"]
        info = {"id": repo_id, "sha": sha, "private": repo.private, "tags": [], "lastModified": "2026-01-01T00:00:00Z",
                "siblings": [{"rfilename": name} for name in sorted(files)]}  # fmt: skip
        readme = files.get("README.md")
        if readme:
            tag = re.search(r"^pipeline_tag:\s*(\S+)", self.state.read(readme["sha256"]).decode(), re.M)
            if tag:
                info["pipeline_tag"] = tag.group(1)
        self._send(200, info)

    def _tree(self, kind: str, repo_id: str, revision: str, folder: str | None, query: dict):
        repo, sha = self._at_revision(kind, repo_id, revision)
        if sha is None:
            return None
        prefix = (folder or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, directories = [], set()
        for name, entry in sorted(repo.commits[sha]["files"].items()):
            if prefix and not name.startswith(prefix + "/"):
                continue
            relative = name[len(prefix) + 1 :] if prefix else name
            parents = relative.split("/")[:-1]
            for depth in range(1, len(parents) + 1):
                if recursive or depth == 1:
                    directories.add("/".join(filter(None, [prefix, *parents[:depth]])))
            if recursive or not parents:
                item = {"type": "file", "path": name, "size": entry["size"], "oid": entry["sha256"][:40]}
                if entry["lfs"]:
                    item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": 134}
                if query.get("expand", ["false"])[0].lower() == "true":
                    item["lastCommit"] = {
                        "id": sha,
                        "title": repo.commits[sha]["title"],
                        "date": "2026-01-01T00:00:00Z",
                    }
                entries.append(item)
        if prefix and not entries and not directories:
            return self._error(404, "EntryNotFound", f"{prefix} does not exist at {revision}")
        entries += [{"type": "directory", "path": d, "oid": new_sha(d)} for d in sorted(directories)]
        self._send(200, entries)

    def _resolve(self, kind: str, repo_id: str, revision: str, filename: str):
        repo, sha = self._at_revision(kind, repo_id, revision)
        if sha is None:
            return None
        entry = repo.commits[sha]["files"].get(filename)
        if entry is None:
            return self._error(404, "EntryNotFound", f"{filename} not found", {"X-Repo-Commit": sha})
        data = self.state.read(entry["sha256"])
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["sha256"]}"', "Accept-Ranges": "bytes"}
        byte_range = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
        if byte_range and self.command == "GET":
            start = int(byte_range.group(1) or 0)
            end = min(int(byte_range.group(2) or len(data) - 1), len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start : end + 1], headers, "application/octet-stream")
        self._send(200, data, headers, "application/octet-stream")

    def _preupload(self, kind: str, repo_id: str, revision: str, body: bytes):
        if self._repo(kind, repo_id) is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        # Inline ("regular") contents keep LFS and Xet out; dataset shards are temporary files that the client
        # deletes before committing, so they must travel by LFS.
        files = [
            {"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(".parquet") else "regular",
             "shouldIgnore": False, "oid": None}
            for f in json.loads(body)["files"]
        ]  # fmt: skip
        self._send(200, {"files": files, "commitOid": None})

    def _lfs_batch(self, request: dict):
        host = self.headers["Host"]
        objects = []
        for item in request["objects"]:
            answer = {"oid": item["oid"], "size": item["size"]}
            if not (self.state.blobs / item["oid"]).exists():
                answer["actions"] = {"upload": {"href": f"http://{host}/lfs-upload/{item['oid']}"}}
            objects.append(answer)
        self._send(200, {"transfer": "basic", "objects": objects})

    def _branch(self, kind: str, repo_id: str, branch: str, body: bytes):
        repo = self._repo(kind, repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        with self.state.lock:
            if branch in repo.branches:
                return self._error(409, "BranchExists", f"Branch {branch} already exists")
            start = (json.loads(body) if body else {}).get("startingPoint") or "main"
            repo.branches[branch] = repo.resolve(start)
        self._send(200, {})

    def _commit(self, kind: str, repo_id: str, revision: str, body: bytes):
        repo = self._repo(kind, repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        if self.state.fail_commits > 0:
            self.state.fail_commits -= 1
            return self._error(500, "InternalError", "injected failure: the commit was not stored")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        with self.state.lock:
            head = repo.resolve(revision)
            if head is None or revision not in repo.branches:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            if header.get("parentCommit") and header["parentCommit"] != head:
                return self._error(
                    412, "PreconditionFailed", "A commit has happened since. Please refresh and try again."
                )
            files = dict(repo.commits[head]["files"])
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    data = base64.b64decode(value["content"])
                    files[value["path"]] = {"sha256": self.state.store(data), "size": len(data), "lfs": False}
                elif key == "lfsFile":
                    if not (self.state.blobs / value["oid"]).exists():
                        return self._error(422, "LfsObjectMissing", f"LFS object of {value['path']} was not uploaded")
                    files[value["path"]] = {"sha256": value["oid"], "size": value["size"], "lfs": True}
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {name: entry for name, entry in files.items() if not name.startswith(folder)}
            sha = new_sha(repo_id, head, header.get("summary", ""))
            repo.commits[sha] = {"files": files, "parent": head, "title": header.get("summary", "")}
            repo.branches[revision] = sha
        prefix = "" if repo.type == "model" else f"{repo.type}s/"
        url = f"http://{self.headers['Host']}/{prefix}{repo_id}/commit/{sha}"
        self._send(200, {"commitOid": sha, "commitUrl": url})


class LocalHub:
    """Start with `LocalHub(folder).start()`; `endpoint` is the value for HF_ENDPOINT."""

    def __init__(self, root: Path, port: int = 0):
        self.state = HubState(Path(root))
        self.port = port
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LocalHub":
        handler = type("BoundHubHandler", (HubHandler,), {"state": self.state})
        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        repo = self.state.repos[(repo_type, repo_id)]
        entries = repo.commits[repo.resolve(revision)]["files"]
        return {name: self.state.read(entry["sha256"]) for name, entry in entries.items()}

    def commit_count(self, repo_id: str, repo_type: str = "model") -> int:
        return len(self.state.repos[(repo_type, repo_id)].commits) - 1  # less the repository's initial commit
