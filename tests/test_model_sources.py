"""Where phi and psi come from: family names with ordered mirrors, any SD 1.x/2.x folder, and one-line failures.

The Hub is the real ``huggingface_hub`` client talking to the stand-in of ``fake_hub.py`` on 127.0.0.1.
"""

import pytest
import torch
from fake_hub import hub_env, run_cli, serving

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


def test_the_next_mirror_is_used_when_the_first_is_gone_and_named_in_one_line(tiny_sd2, tmp_path):
    with serving({FIRST: "missing", SECOND: str(tiny_sd2)}) as server:
        result = run_cli(
            "generate",
            "a head",
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
            "--out",
            tmp_path / "run",
            env_extra=hub_env(server, tmp_path),
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"phi: Stable Diffusion from {SECOND} (on the Hugging Face Hub)" in result.stderr
    assert any(
        r.startswith(f"GET /{SECOND}/resolve/") and r.endswith("unet/diffusion_pytorch_model.safetensors")
        for r in server.requests
    )  # the weights came from the mirror that answered
    assert (tmp_path / "run" / "scene.ply").is_file()


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
    assert f"stabilityai/stable-diffusion-2-1-base -> {FIRST}: on the Hugging Face Hub" in result.stdout


def test_offline_with_only_the_index_cached_is_not_a_usable_source(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(
        "huggingface_hub.try_to_load_from_cache",
        lambda repo, name: "/cache/model_index.json" if name == "model_index.json" else None,
    )
    check = sources.check_source("owner/partly-cached")
    assert not check.ok and "only partly in the Hugging Face cache" in check.reason
