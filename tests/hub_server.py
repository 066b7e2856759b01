"""A loopback stand-in for the part of the Hugging Face Hub API that huggingface_hub uses to
create a repo, commit files and download them. In-memory, one thread, stdlib only.

Endpoints: ``POST /api/repos/create``, ``POST /api/validate-yaml``,
``POST /api/models/{repo}/preupload/{rev}``, ``POST /api/models/{repo}/commit/{rev}`` (ndjson,
regular base64 files only: preupload never asks for LFS), ``GET /api/models/{repo}[/revision/{rev}]``,
``HEAD|GET /{repo}/resolve/{rev}/{path}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubServer:
    """Serve an in-memory Hub on ``127.0.0.1`` at a free port, in a daemon thread."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def commit(self, repo: str, lines: list[dict]) -> str:
        files = self.repos[repo]
        for line in lines:
            if line["key"] == "file":
                files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] == "deletedFile":
                files.pop(line["value"]["path"], None)
            elif line["key"] != "header":
                raise ValueError(f"unsupported commit operation {line['key']}")
        digest = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
        self.commits[repo] = digest
        return digest


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    repo = r"(?P<repo>[^/]+/[^/]+)"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            return

        def _json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _not_found(self, code: str) -> None:
            self._json(404, {"error": code}, {"X-Error-Code": code})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def do_POST(self) -> None:
            hub.requests.append(f"POST {self.path}")
            path = self.path.split("?")[0]
            if path == "/api/repos/create":
                payload = json.loads(self._body())
                repo_id = f"{payload['organization']}/{payload['name']}"
                hub.repos.setdefault(repo_id, {})
                hub.commits.setdefault(repo_id, "0" * 40)
                self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo_id})
            elif path == "/api/validate-yaml":
                content = json.loads(self._body())["content"]
                errors = [] if content.startswith("---\n") else [{"message": "no YAML front matter"}]
                self._json(400 if errors else 200, {"errors": errors, "warnings": []})
            elif match := re.fullmatch(rf"/api/models/{repo}/preupload/[^/]+", path):
                if match["repo"] not in hub.repos:
                    return self._not_found("RepoNotFound")
                files = json.loads(self._body())["files"]
                plan = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                self._json(200, {"files": plan})
            elif match := re.fullmatch(rf"/api/models/{repo}/commit/[^/]+", path):
                if match["repo"] not in hub.repos:
                    return self._not_found("RepoNotFound")
                lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
                oid = hub.commit(match["repo"], lines)
                url = f"{hub.url}/{match['repo']}/commit/{oid}"
                self._json(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})
            else:
                self._not_found("NotFound")

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            hub.requests.append(f"{self.command} {self.path}")
            path = self.path.split("?")[0]
            if match := re.fullmatch(rf"/api/models/{repo}(?:/revision/[^/]+)?", path):
                if match["repo"] not in hub.repos:
                    return self._not_found("RepoNotFound")
                files = hub.repos[match["repo"]]
                info = {
                    "id": match["repo"],
                    "modelId": match["repo"],
                    "sha": hub.commits[match["repo"]],
                    "siblings": [{"rfilename": name} for name in sorted(files)],
                }
                return self._json(200, info)
            if match := re.fullmatch(rf"/{repo}/resolve/[^/]+/(?P<file>.+)", path):
                if match["repo"] not in hub.repos:
                    return self._not_found("RepoNotFound")
                content = hub.repos[match["repo"]].get(match["file"])
                if content is None:
                    return self._not_found("EntryNotFound")
                self.send_response(200)
                self.send_header("Content-Length", str(len(content)))
                self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
                self.send_header("X-Repo-Commit", hub.commits[match["repo"]])
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(content)
                return None
            return self._not_found("NotFound")

    return Handler
