"""A Hugging Face Hub stand-in on 127.0.0.1 for tests, and a CLI runner pointed at it (``HF_ENDPOINT``).

It answers like the Hub for a missing repository (404, ``X-Error-Code: RepoNotFound``) and a gated one (403,
``GatedRepo``), and serves a local folder as a repository: file HEAD/GET with ETag and commit headers, the
``/api/models/{repo}`` info and its ``tree`` listings. So the resolver, the downloads and diffusers' and
transformers' own ``from_pretrained`` run exactly as they do against the real Hub. Every request is recorded.
"""

import contextlib
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(http.server.ThreadingHTTPServer):
    """repos: id -> "missing" | "gated" | "ratelimited" (429) | "broken" (500) | "login" (401) | a local folder whose
    files are served."""

    def __init__(self, repos: dict):
        super().__init__(("127.0.0.1", 0), FakeHubHandler)
        self.repos = repos
        self.requests: list[str] = []


class FakeHubHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass

    def _refuse(self, code: int, error: str | None):
        self.send_response(code)
        if error:
            self.send_header("X-Error-Code", error)
            self.send_header("X-Error-Message", "stand-in Hub says no")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, data: bytes, body: bool, content_type="application/octet-stream"):
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _answer(self, body: bool):
        self.server.requests.append(f"{self.command} {self.path}")
        parts = self.path.split("?")[0].strip("/").split("/")
        api = parts[:2] == ["api", "models"]
        if api:
            parts = parts[2:]
        elif parts[:1] == ["api"]:
            return self._refuse(404, None)
        repo_id, rest = "/".join(parts[:2]), parts[2:]
        kind = self.server.repos.get(repo_id, "missing")
        refusals = {
            "missing": (404, "RepoNotFound"),
            "gated": (403, "GatedRepo"),
            "ratelimited": (429, None),
            "broken": (500, None),
            "login": (401, None),
        }
        if kind in refusals:
            return self._refuse(*refusals[kind])
        root = Path(kind)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        if api and rest[:1] == ["tree"]:  # GET /api/models/{repo}/tree/{rev}/{path}: a folder listing
            folder = root.joinpath(*rest[2:])
            if not folder.is_dir():
                return self._refuse(404, "EntryNotFound")
            listing = [
                {
                    "type": "directory" if p.is_dir() else "file",
                    "path": str(p.relative_to(root)),
                    "size": p.stat().st_size if p.is_file() else 0,
                    "oid": COMMIT,
                }
                for p in sorted(folder.iterdir())
            ]
            return self._send(json.dumps(listing).encode(), body, "application/json")
        if api:  # GET /api/models/{repo}[/revision/{rev}]: the repository's info
            info = {"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
            return self._send(json.dumps(info).encode(), body, "application/json")
        if rest[:1] != ["resolve"] or len(rest) < 3 or not root.joinpath(*rest[2:]).is_file():
            return self._refuse(404, "EntryNotFound")
        self._send(root.joinpath(*rest[2:]).read_bytes(), body)

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)


@contextlib.contextmanager
def serving(repos: dict):
    """Serve ``repos`` (see ``FakeHub``) in a thread for the block; yields the server (its ``requests``)."""
    server = FakeHub(repos)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run_cli(*args, env_extra: dict, cwd=ROOT) -> subprocess.CompletedProcess:
    """``python -m esd_gs ARGS`` in a subprocess with ``env_extra`` added to the environment."""
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1", **env_extra)
    env.pop("TRANSFORMERS_OFFLINE", None)
    return subprocess.run(
        [sys.executable, "-m", "esd_gs", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def hub_env(server: FakeHub, tmp_path: Path) -> dict:
    """Environment that points huggingface_hub at ``server`` with an empty cache under ``tmp_path``."""
    return {
        "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
    }
