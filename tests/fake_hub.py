"""A Hugging Face Hub stand-in on 127.0.0.1 for tests, and a CLI runner pointed at it (``HF_ENDPOINT``).

It answers like the Hub for a missing repository (404, ``X-Error-Code: RepoNotFound``) and a gated one (403,
``GatedRepo``), and serves a local folder as a repository: file HEAD/GET with ETag (the file's sha256, as the Hub's
LFS files have) and commit headers (the requested revision when it is a commit hash), the ``/api/models/{repo}`` info
and its ``tree`` listings. So the resolver, the downloads and diffusers' and transformers' own ``from_pretrained`` run
exactly as they do against the real Hub. Every request is recorded.

``run_cli(..., pins=...)`` starts the CLI with ``esd_gs.priors.sources.PINS`` entries replaced (``pins_for``): the
known mirrors' real digests cannot match a tiny test model, so tests pin the mirror ids to the tiny model's files.
"""

import contextlib
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
"""The commit the stand-in names for a branch (``main``); a requested commit hash is answered as itself."""
PINNED = "fedcba9876543210fedcba9876543210fedcba98"
"""A commit hash the tests pin mirrors to."""
WEIGHTS = (
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
)


class FakeHub(http.server.ThreadingHTTPServer):
    """repos: id -> "missing" | "gated" | "ratelimited" (429) | "broken" (500) | "login" (401) | a local folder whose
    files are served. ``etags``: (id, file) -> the ETag to announce instead of the file's sha256 (a file whose content
    is not what the Hub's listing says: a download damaged or tampered with on its way)."""

    def __init__(self, repos: dict, etags: dict | None = None):
        super().__init__(("127.0.0.1", 0), FakeHubHandler)
        self.repos = repos
        self.etags = etags or {}
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

    def _send(self, data: bytes, body: bool, content_type="application/octet-stream", commit=COMMIT, etag=None):
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", '"' + (etag or hashlib.sha256(data).hexdigest()) + '"')
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
        revision = rest[1] if len(rest) > 1 and rest[0] in ("resolve", "revision", "tree") else "main"
        commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else COMMIT
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
            return self._send(json.dumps(listing).encode(), body, "application/json", commit)
        if api:  # GET /api/models/{repo}[/revision/{rev}]: the repository's info
            info = {"id": repo_id, "sha": commit, "siblings": [{"rfilename": f} for f in files]}
            return self._send(json.dumps(info).encode(), body, "application/json", commit)
        if rest[:1] != ["resolve"] or len(rest) < 3 or not root.joinpath(*rest[2:]).is_file():
            return self._refuse(404, "EntryNotFound")
        name = "/".join(rest[2:])
        etag = self.server.etags.get((repo_id, name))
        self._send(root.joinpath(*rest[2:]).read_bytes(), body, commit=commit, etag=etag)

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)


@contextlib.contextmanager
def serving(repos: dict, etags: dict | None = None):
    """Serve ``repos`` (see ``FakeHub``) in a thread for the block; yields the server (its ``requests``)."""
    server = FakeHub(repos, etags)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


_WITH_PINS = (
    "import json, os, sys\n"
    "from esd_gs.priors import sources\n"
    "for repo, (revision, digests) in json.loads(os.environ['ESD_GS_TEST_PINS']).items():\n"
    "    sources.PINS[repo] = sources.Pin(revision, digests)\n"
    "from esd_gs.cli.main import main\n"
    "sys.exit(main())\n"
)


def run_cli(*args, env_extra: dict, cwd=ROOT, pins: dict | None = None, timeout=600) -> subprocess.CompletedProcess:
    """``python -m esd_gs ARGS`` in a subprocess with ``env_extra`` added to the environment; ``pins``: Hub id ->
    (revision, {weight file: sha256}) replacing ``sources.PINS`` entries in that process (``pins_for``)."""
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1", **env_extra)
    env.pop("TRANSFORMERS_OFFLINE", None)
    start = [sys.executable, "-m", "esd_gs"]
    if pins is not None:
        env["ESD_GS_TEST_PINS"] = json.dumps(pins)
        start = [sys.executable, "-c", _WITH_PINS]
    return subprocess.run([*start, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def pins_for(folder: Path, revision: str | None = PINNED) -> tuple[str | None, dict[str, str]]:
    """A pin for a mirror served from ``folder``: ``revision`` and the sha256 of its weight files."""
    return revision, {name: hashlib.sha256((Path(folder) / name).read_bytes()).hexdigest() for name in WEIGHTS}


def hub_env(server: FakeHub, tmp_path: Path) -> dict:
    """Environment that points huggingface_hub at ``server`` with an empty cache under ``tmp_path``."""
    return {
        "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "ESD_GS_CACHE": str(tmp_path / "esd-gs-cache"),  # where verified weights are recorded
    }
