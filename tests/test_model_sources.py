"""Where phi and psi come from: family names with ordered mirrors tried until one loads, pinned and verified weights,
any SD 1.x/2.x folder, and one-line failures.

The Hub is the real ``huggingface_hub`` client talking to the stand-in of ``fake_hub.py`` on 127.0.0.1. The known
mirrors' real digests cannot match a tiny test model, so the runs that load one pin the mirror ids to the tiny
model's files (``run_cli(..., pins=...)``).
"""

import hashlib
import os
import shutil
import socket
import time

import pytest
import torch
from fake_hub import COMMIT, PINNED, hub_env, pins_for, run_cli, serving

from esd_gs.cameras import OrbitSampler
from esd_gs.errors import UserError
from esd_gs.estimators import CameraLoRAEstimator, LoRAPsiConfig
from esd_gs.priors import StableDiffusionPrior, sources
from esd_gs.testing.tiny_sd import TEXT_WIDTH, build_tiny_stable_diffusion

FIRST, SECOND = sources.KNOWN_SOURCES["sd2.1-base"]


@pytest.fixture(scope="module")
def tiny_sd2(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "sd2", "epsilon", family="sd2")


def test_every_known_source_failing_is_one_line_naming_each_reason(tmp_path):
    with serving({FIRST: "missing", SECOND: "gated"}) as server:
        result = run_cli(
            "generate", "a head", "--steps", "1", "--out", tmp_path / "run", env_extra=hub_env(server, tmp_path)
        )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("esd-gs: error: no Stable Diffusion sd2.1-base source could be loaded for phi: tried ")
    assert f"{FIRST} (not found on the Hub)" in line
    assert f"{SECOND} (gated: log in with `hf auth login`" in line
    # the remedies are generate's own options (--model and --prior synthetic of esd-gs 0.1 are refused now)
    assert "--prior.model PATH" in line and "--preset synthetic" in line and "huggingface-cli" not in line
    assert line.index(FIRST) < line.index(SECOND)  # tried in the documented order


SMALL_RUN = (
    "--steps",
    "1",
    "--resolution",
    "64",
    "--init.num-points",
    "100",
    "--output.turntable-views",
    "2",
    "--output.turntable-size",
    "32",
)


def test_the_next_mirror_is_used_when_the_first_is_gone_and_named_in_one_line(tiny_sd2, tmp_path):
    with serving({FIRST: "missing", SECOND: str(tiny_sd2)}) as server:
        result = run_cli(
            "generate",
            "a head",
            *SMALL_RUN,
            "--out",
            tmp_path / "run",
            env_extra=hub_env(server, tmp_path),
            pins={SECOND: pins_for(tiny_sd2)},
        )
    assert result.returncode == 0, result.stderr[-3000:]
    line = f"phi: Stable Diffusion from {SECOND} at {PINNED[:8]} (on the Hugging Face Hub; weights verified: sha256"
    assert line in result.stderr
    weights = [r for r in server.requests if r.startswith(f"GET /{SECOND}/resolve/") and r.endswith(".safetensors")]
    assert {r.split("/resolve/")[1] for r in weights} == {  # the pinned revision, and only the verified files
        f"{PINNED}/unet/diffusion_pytorch_model.safetensors",
        f"{PINNED}/vae/diffusion_pytorch_model.safetensors",
        f"{PINNED}/text_encoder/model.safetensors",
    }
    assert not [r for r in server.requests if "/resolve/main/" in r or "/resolve/" + "0123456789abcdef" in r]
    assert (tmp_path / "run" / "scene.ply").is_file()


def test_a_mirror_whose_weights_fail_to_load_gives_way_to_the_next_in_one_line(tiny_sd2, tmp_path):
    """The first mirror answers (its model_index.json is there) but its UNet weight file is not: the second loads."""
    broken = tmp_path / "no-unet-weights"
    shutil.copytree(tiny_sd2, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with serving({FIRST: str(broken), SECOND: str(tiny_sd2)}) as server:
        result = run_cli(
            "generate",
            "a head",
            *SMALL_RUN,
            "--out",
            tmp_path / "run",
            env_extra=hub_env(server, tmp_path),
            pins={FIRST: pins_for(tiny_sd2), SECOND: pins_for(tiny_sd2, revision=None)},  # 2: digests only
        )
    assert result.returncode == 0, result.stderr[-3000:]
    failed = [line for line in result.stderr.splitlines() if FIRST in line]
    assert failed == [
        f"phi: {FIRST} failed to load (unet/diffusion_pytorch_model.safetensors is missing); trying {SECOND}"
    ], result.stderr
    # a mirror without a pinned revision loads the commit its verified weights came from, and says which
    line = f"phi: Stable Diffusion from {SECOND} at {COMMIT[:8]} (on the Hugging Face Hub; weights verified: sha256"
    assert line in result.stderr
    assert (tmp_path / "run" / "scene.ply").is_file()


def test_weights_that_are_not_the_published_ones_are_refused_in_one_line(tiny_sd2, tmp_path):
    """Mirror 1 lists another UNet than the pinned digest: refused before it is downloaded. Mirror 2 lists the right
    digest but serves other bytes (a download damaged or tampered with on its way): refused once hashed, and removed
    from the cache. Nothing runs: one line names each file and why."""
    other = build_tiny_stable_diffusion(tmp_path / "other", "epsilon", family="sd2", seed=7)
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_sd2, tampered)
    unet = tampered / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(unet.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte off
    unet.write_bytes(bytes(data))
    good = pins_for(tiny_sd2)
    name = "unet/diffusion_pytorch_model.safetensors"
    with serving({FIRST: str(other), SECOND: str(tampered)}, etags={(SECOND, name): good[1][name]}) as server:
        env = hub_env(server, tmp_path)
        result = run_cli(
            "generate", "a head", *SMALL_RUN, "--out", tmp_path / "run", env_extra=env, pins={FIRST: good, SECOND: good}
        )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    listed = hashlib.sha256((other / name).read_bytes()).hexdigest()
    found = hashlib.sha256(bytes(data)).hexdigest()
    assert (
        f"{FIRST} ({name} does not match its published sha256 ({good[1][name][:12]}..., this one is "
        f"{listed[:12]}...), not downloaded)" in lines[0]
    )
    assert (
        f"{SECOND} ({name} does not match its published sha256 ({good[1][name][:12]}..., this one is "
        f"{found[:12]}...): a damaged or tampered download, removed from the cache)" in lines[0]
    )
    assert not [r for r in server.requests if r.startswith(f"GET /{FIRST}/") and r.endswith(name)]
    blobs = list((tmp_path / "hf-home" / "hub").rglob(f"blobs/{good[1][name]}"))
    assert blobs == []  # the bad download is gone: the next run downloads it again
    assert not (tmp_path / "run" / "scene.ply").exists()


def test_a_mirror_named_explicitly_is_loaded_as_it_is_without_the_digest_check(tiny_sd2, tmp_path):
    """The way past a published digest that no longer matches: name the Hub id itself. It is loaded at its main
    branch, unchecked, and the line says so; the same weights under the family name are refused."""
    other = build_tiny_stable_diffusion(tmp_path / "other", "epsilon", family="sd2", seed=7)
    with serving({FIRST: str(other), SECOND: "missing"}) as server:
        env = hub_env(server, tmp_path)
        pins = {FIRST: pins_for(tiny_sd2)}  # digests of another model than the one served
        refused = run_cli("generate", "a head", *SMALL_RUN, "--out", tmp_path / "r1", env_extra=env, pins=pins)
        named = run_cli(
            "generate", "a head", *SMALL_RUN, "--prior.model", FIRST, "--out", tmp_path / "r2", env_extra=env, pins=pins
        )
    assert refused.returncode == 2 and "does not match its published sha256" in refused.stderr, refused.stderr[-2000:]
    assert named.returncode == 0, named.stderr[-3000:]
    assert f"phi: Stable Diffusion from {FIRST} (on the Hugging Face Hub; weights not verified: a Hub id named " in (
        named.stdout + named.stderr
    )
    assert (tmp_path / "r2" / "scene.ply").is_file()


def test_a_mirror_with_a_broken_layout_gives_way_and_all_failing_is_one_line(tiny_sd2, tmp_path, monkeypatch):
    """The same fallback for any load failure (here an unreadable UNet config), through the loader itself."""
    broken = tmp_path / "odd-layout"
    shutil.copytree(tiny_sd2, broken)
    (broken / "unet" / "config.json").write_text("{ not json")
    monkeypatch.setitem(sources.KNOWN_SOURCES, "test-family", (str(broken), str(tiny_sd2)))
    lines = []
    prior = StableDiffusionPrior.from_pretrained("test-family", announce=lines.append)
    assert prior.unet.config.cross_attention_dim == TEXT_WIDTH["sd2"]
    assert len(lines) == 2 and lines[0].startswith(f"phi: {broken} failed to load (not a usable folder: ")
    assert lines[0].endswith(f"; trying {tiny_sd2}")
    assert lines[1] == f"phi: Stable Diffusion from {tiny_sd2} (local folder; weights not verified: a local folder)"
    monkeypatch.setitem(sources.KNOWN_SOURCES, "test-family", (str(broken), str(broken)))
    with pytest.raises(UserError) as refused:
        StableDiffusionPrior.from_pretrained("test-family", announce=lines.append)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("no Stable Diffusion test-family source could be loaded for phi")
    assert message.count("(not a usable folder: ") == 2


def test_running_out_of_memory_while_loading_stops_instead_of_trying_the_next_mirror(tiny_sd2, monkeypatch):
    """Any other load failure gives way to the next mirror; out of memory is the machine's limit (the next mirror is
    as big), so it reaches the caller, which says it in one line (``pipeline.generate``), after trying one source."""
    monkeypatch.setitem(sources.KNOWN_SOURCES, "test-family", (str(tiny_sd2), str(tiny_sd2) + "/."))
    tried, lines = [], []

    def load(loadable):
        tried.append(loadable.source)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        sources.load_first("test-family", "phi", sources.PHI_PARTS, load, lines.append)
    assert tried == [str(tiny_sd2)] and lines == []

    def fail(loadable):
        tried.append(loadable.source)
        raise ValueError("an odd layout")

    tried.clear()
    with pytest.raises(UserError):
        sources.load_first("test-family", "phi", sources.PHI_PARTS, fail, lines.append)
    assert len(tried) == 2  # the same load failing otherwise: both mirrors tried


def test_verified_weights_are_hashed_once(tmp_path, monkeypatch):
    """A verified blob is recorded (size, modification time): the next run does not hash its gigabytes again."""
    monkeypatch.setenv("ESD_GS_CACHE", str(tmp_path / "cache"))
    data = b"weights" * 1000
    digest = hashlib.sha256(data).hexdigest()
    blob = tmp_path / "blobs" / digest
    blob.parent.mkdir()
    blob.write_bytes(data)
    link = tmp_path / "snapshots" / "unet" / "diffusion_pytorch_model.safetensors"
    link.parent.mkdir(parents=True)
    link.symlink_to(blob)
    hashed = []
    real_sha256 = sources.sha256_file
    monkeypatch.setattr(sources, "sha256_file", lambda path: hashed.append(path) or real_sha256(path))
    sources.verify_weight_file("unet/x", link, digest)
    sources.verify_weight_file("unet/x", link, digest)
    sources.verify_weight_file("unet/x", link, None)  # no published digest: the name the Hub gave it
    assert len(hashed) == 1
    os.utime(blob, ns=(1, 1))  # touched: hashed again
    sources.verify_weight_file("unet/x", link, digest)
    assert len(hashed) == 2
    with pytest.raises(sources.SourceFailure, match=r"^unet/x does not match its published sha256 \(0000"):
        sources.verify_weight_file("unet/x", link, "0" * 64)  # the Hub named another file: refused, kept
    assert blob.exists()


def test_what_is_pinned():
    """Every known mirror of the SD 2.x families is pinned with a digest for each weight file it loads; sd1.5 is not
    (README: no revision or digest of it could be established offline)."""
    for family in ("sd2.1-base", "sd2.1"):
        for source in (*sources.KNOWN_SOURCES[family], *[r for r, f in sources.REMOVED_IDS.items() if f == family]):
            pin = sources.PINS[source]
            assert set(pin.sha256) == set(sources.PART_WEIGHTS.values())
            assert pin.revision is None or len(pin.revision) == 40
    assert sources.PINS[FIRST].revision == "4e63672c03103b6c636b8fb4119ba982469b2955"
    assert sources.PINS[FIRST].sha256 == sources.PINS[SECOND].sha256  # the same files, copied from Stability AI
    assert sources.KNOWN_SOURCES["sd1.5"][0] not in sources.PINS


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def offline_start(tmp_path_factory):
    """Seconds an offline ``generate`` takes to fail here and now: the start-up (imports) alone, no Hub at all."""
    tmp = tmp_path_factory.mktemp("offline")
    start = time.monotonic()
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf")}
    assert run_cli("generate", "a head", "--steps", "1", "--out", tmp / "run", env_extra=env).returncode == 2
    return time.monotonic() - start


@pytest.mark.parametrize("hub", ["closed port", "never answers"])
def test_an_unreachable_hub_is_one_quick_line(tmp_path, hub, offline_start):
    """HF_HUB_OFFLINE unset and nothing answering at HF_ENDPOINT: one check, one line, within 15 s (huggingface_hub's
    retries took 50-60 s). On a machine so loaded that the start-up alone takes longer, the bound is the check's own
    cost: at most a few seconds more than an offline start."""
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = closed_port() if hub == "closed port" else silent.getsockname()[1]
        env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
        start = time.monotonic()
        result = run_cli("generate", "a head", "--steps", "1", "--out", tmp_path / "run", env_extra=env, timeout=60)
        elapsed = time.monotonic() - start
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    why = "refused the connection" if hub == "closed port" else "did not answer within 5 s"
    assert f"{FIRST} (Hub unreachable (127.0.0.1:{port} {why}) and not in the cache)" in lines[0]
    assert elapsed < max(15.0, offline_start + sources.PROBE_TIMEOUT_S + 3.0), (elapsed, offline_start)


def test_a_cached_model_loads_when_the_hub_is_unreachable(tiny_sd2, tmp_path):
    """Downloaded once through the stand-in Hub, then the Hub gone (HF_HUB_OFFLINE unset): the quick check switches
    to the cache, and the run loads the same verified weights from it and finishes, without retries."""
    pins = {FIRST: pins_for(tiny_sd2)}
    with serving({FIRST: str(tiny_sd2), SECOND: "missing"}) as server:
        env = hub_env(server, tmp_path)
        first = run_cli("generate", "a head", *SMALL_RUN, "--out", tmp_path / "online", env_extra=env, pins=pins)
    assert first.returncode == 0, first.stderr[-3000:]
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    again = run_cli("generate", "a head", *SMALL_RUN, "--out", tmp_path / "cached", env_extra=env, pins=pins)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "cached" / "scene.ply").is_file()
    phi = [line for line in again.stderr.splitlines() if line.startswith(f"phi: Stable Diffusion from {FIRST}")]
    assert len(phi) == 1 and f"at {PINNED[:8]} (in the Hugging Face cache;" in phi[0], again.stderr
    assert "weights verified: sha256" in phi[0]
    assert "Traceback" not in again.stderr and "Retrying" not in again.stderr


def test_offline_with_an_empty_cache_says_so(tmp_path):
    result = run_cli(
        "generate",
        "a head",
        "--steps",
        "1",
        "--out",
        tmp_path / "run",
        env_extra={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")},
    )
    assert result.returncode == 2
    line = result.stderr.strip()
    assert (
        f"{FIRST} (offline and not in the Hugging Face cache), {SECOND} (offline and not in the Hugging Face cache)"
        in line
    )


def test_local_folders_and_bad_names(tmp_path, tiny_sd2, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sources.resolve_model(str(tiny_sd2))[0] == str(tiny_sd2)
    with pytest.raises(UserError, match=r"from /no/such/dir: no such folder; pass --prior.model PATH"):
        sources.resolve_model("/no/such/dir")
    (tmp_path / "half" / "unet").mkdir(parents=True)
    with pytest.raises(
        UserError, match=r"not a diffusers Stable Diffusion folder \(no vae, text_encoder, tokenizer, scheduler\)"
    ):
        StableDiffusionPrior.from_pretrained(str(tmp_path / "half"))
    with pytest.raises(UserError, match=r"not a Hub id \(owner/name\) or a known family \(sd2.1-base, sd2.1, sd1.5\)"):
        sources.resolve_model("sd21")
    with pytest.raises(UserError, match=r"--psi.base-model PATH"):
        sources.resolve_model("/no/such/dir", role="psi")
    # A folder that answers but cannot be loaded still fails in one sentence.
    broken = tmp_path / "broken"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (broken / part).mkdir(parents=True)
    with pytest.raises(UserError, match="is not a usable Stable Diffusion folder"):
        StableDiffusionPrior.from_pretrained(str(broken))


# ---------------------------------------------------------------------------------------------- SD 1.x and 2.x
FAMILIES = [("sd1", "epsilon"), ("sd2", "epsilon"), ("sd2", "v_prediction")]


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {
        (f, p): build_tiny_stable_diffusion(root / f"{f}-{p}", p, family=f, seed=i) for i, (f, p) in enumerate(FAMILIES)
    }


def psi_moves_and_scores(prior, psi):
    """One psi step gives every LoRA B a non-zero value; the ESD terms are finite and of the latents' shape."""
    cams = OrbitSampler().sample(2, generator=torch.Generator().manual_seed(0))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    latents = prior.encode_images(images)
    text = prior.text_embeddings("a head").plain
    for group in psi.optimizer.param_groups:
        group["lr"] = 1e-2
    psi.train_step(latents, text, cams.embedding(), torch.Generator().manual_seed(2))
    lora_b = [p for n, p in psi.unet.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.detach().abs().max()) > 0 for p in lora_b)
    x_t = prior.add_noise(latents, torch.randn_like(latents), torch.tensor([500, 500]))
    eps_c, eps_null = psi.eps_camera_and_null(x_t, torch.tensor([500, 500]), text, cams.embedding())
    assert eps_c.shape == latents.shape and torch.isfinite(eps_c).all() and torch.isfinite(eps_null).all()


@pytest.mark.parametrize("family,prediction", FAMILIES, ids=[f"{f}-{p}" for f, p in FAMILIES])
def test_each_family_works_as_phi_with_a_shared_psi(family_models, family, prediction):
    prior = StableDiffusionPrior.from_pretrained(str(family_models[family, prediction]), announce=lambda line: None)
    assert prior.text_encoder.config.hidden_size == TEXT_WIDTH[family] == prior.unet.config.cross_attention_dim
    assert prior.prediction_type == prediction
    psi_moves_and_scores(prior, CameraLoRAEstimator.create(prior, LoRAPsiConfig()))


@pytest.mark.parametrize(
    "phi_key,psi_key",
    [
        (("sd2", "epsilon"), ("sd2", "v_prediction")),
        (("sd1", "epsilon"), ("sd1", "epsilon")),
        (("sd2", "v_prediction"), ("sd2", "epsilon")),
    ],
    ids=["sd2.1-base+sd2.1", "sd1+sd1", "v-phi+eps-psi"],
)
def test_separate_psi_base_of_the_same_family(family_models, phi_key, psi_key):
    prior = StableDiffusionPrior.from_pretrained(str(family_models[phi_key]), announce=lambda line: None)
    psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig(shared_unet=False, base_model=str(family_models[psi_key])))
    assert psi.prediction_type == psi_key[1]
    psi_moves_and_scores(prior, psi)


def test_psi_base_of_the_other_family_is_refused_in_one_line(family_models):
    prior = StableDiffusionPrior.from_pretrained(str(family_models["sd2", "epsilon"]), announce=lambda line: None)
    with pytest.raises(UserError, match="reads text of width 24 but phi's text encoder gives 32"):
        CameraLoRAEstimator.create(
            prior, LoRAPsiConfig(shared_unet=False, base_model=str(family_models["sd1", "epsilon"]))
        )


def test_a_refusal_wrapped_as_not_in_cache_is_reported_as_what_the_hub_said(monkeypatch):
    """huggingface_hub wraps an HTTP refusal in LocalEntryNotFoundError: the user must hear the refusal, not
    'offline'."""
    import httpx2
    from huggingface_hub import errors

    def wrapped(status):
        response = httpx2.Response(status, request=httpx2.Request("HEAD", "http://hub.invalid/a/b/resolve/main/x"))
        try:
            try:
                raise errors.HfHubHTTPError(f"{status} error", response=response)
            except errors.HfHubHTTPError as inner:
                raise errors.LocalEntryNotFoundError("not in the cache either") from inner
        except errors.LocalEntryNotFoundError as outer:
            return outer

    assert sources.hub_failure_reason(wrapped(429)) == "rate-limited by the Hub (HTTP 429): wait and retry"
    assert sources.hub_failure_reason(wrapped(503)) == "the Hub answered HTTP 503"
    assert "hf auth login" in sources.hub_failure_reason(wrapped(401))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert (
        sources.hub_failure_reason(errors.LocalEntryNotFoundError("no network"))
        == "Hub unreachable and not in the cache"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert (
        sources.hub_failure_reason(errors.LocalEntryNotFoundError("offline"))
        == "offline and not in the Hugging Face cache"
    )


def test_a_login_refusal_from_the_hub_names_hf_auth_login(tmp_path):
    with serving({FIRST: "login", SECOND: "missing"}) as server:
        result = run_cli(
            "generate", "a head", "--steps", "1", "--out", tmp_path / "run", env_extra=hub_env(server, tmp_path)
        )
    assert result.returncode == 2
    assert f"{FIRST} (the Hub refused access (HTTP 401): log in with `hf auth login`)" in result.stderr


def test_a_removed_stabilityai_id_falls_back_to_its_family_mirrors(tmp_path, tiny_sd2):
    """Runs saved with the old default id still resume: the id (maybe cached) first, then the live mirrors."""
    assert sources.candidates("stabilityai/stable-diffusion-2-1-base") == (
        "stabilityai/stable-diffusion-2-1-base",
        FIRST,
        SECOND,
    )
    with serving({"stabilityai/stable-diffusion-2-1-base": "missing", FIRST: str(tiny_sd2)}) as server:
        result = run_cli(
            "doctor", "--model", "stabilityai/stable-diffusion-2-1-base", env_extra=hub_env(server, tmp_path)
        )
    assert result.returncode == 0, result.stdout + result.stderr
    revision = sources.PINS[FIRST].revision
    assert (
        f"stabilityai/stable-diffusion-2-1-base -> {FIRST} at {revision[:8]}: on the Hugging Face Hub" in result.stdout
    )
    assert f"GET /{FIRST}/resolve/{revision}/model_index.json" in server.requests  # asked at the pinned commit


def test_offline_with_only_the_index_cached_is_not_a_usable_source(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(
        "huggingface_hub.try_to_load_from_cache",
        lambda repo, name, revision=None: "/cache/model_index.json" if name == "model_index.json" else None,
    )
    check = sources.check_source("owner/partly-cached")
    assert not check.ok and "only partly in the Hugging Face cache" in check.reason
