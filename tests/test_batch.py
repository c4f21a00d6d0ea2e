"""esd-gs batch: job files, the worker's rules (skip, resume, refuse, reuse the prior and hand it back unchanged),
and whole batches on a real local Ray cluster (2 CPUs): every output, a failing job, Ctrl-C then a re-run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from esd_gs.batch.jobs import expand_jobs, read_job_file
from esd_gs.batch.worker import PriorCache, run_job
from esd_gs.cli.main import main
from esd_gs.errors import UserError
from esd_gs.testing.small_jobs import SMALL_OUTPUT, SMALL_SYNTHETIC
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion

ROOT = Path(__file__).resolve().parents[1]


def small_jobs(path: Path, prompts: list[str], **extra) -> Path:
    path.write_text(yaml.safe_dump([{"prompt": p, **SMALL_SYNTHETIC, **extra} for p in prompts]))
    return path


# ---------------------------------------------------------------------------------------------- job files
def test_job_files_text_yaml_json(tmp_path):
    text = tmp_path / "jobs.txt"
    text.write_text("a head\n\n# not a job\n  a red car  \n")
    assert read_job_file(text) == [{"prompt": "a head"}, {"prompt": "a red car"}]
    data = [{"prompt": "a head", "steps": 7, "preset": "synthetic", "prior": {"p_front": 0.8}}, "a cat"]
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "jobs.json").write_text(json.dumps(data))
    for name in ("jobs.yaml", "jobs.json"):
        assert read_job_file(tmp_path / name) == [data[0], {"prompt": "a cat"}]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", "# nothing\n\n", "holds no jobs"),
        ("map.yaml", "prompt: a head\n", "expected a list of jobs"),
        ("noprompt.yaml", "- steps: 3\n", "job 1: needs a prompt"),
        ("broken.json", "[{", "not valid JSON"),
        ("bad.yaml", "- prompt: a head\n  stepz: 3\n", "unknown setting(s) stepz"),
        ("type.yaml", "- prompt: a head\n  steps: many\n", "steps"),
        ("out.yaml", "- prompt: a head\n  out: somewhere\n", "'out' is set by the batch"),
        ("zero.yaml", "- prompt: a head\n  steps: 0\n", "--steps must be at least 1"),
        ("viewer.yaml", "- prompt: a head\n  viewer: true\n", "'viewer' is set by the batch"),
        ("gpu.yaml", "- prompt: a head\n  device: cuda:1\n", "sees its one GPU"),
    ],
)
def test_bad_job_files_are_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand_jobs(read_job_file(path), tmp_path / "out")
    with pytest.raises(UserError, match="does not exist"):
        read_job_file(tmp_path / "missing.txt")


def test_jobs_expand_over_methods_and_seeds_on_their_base(tmp_path):
    items = [
        {"prompt": "a head", "preset": "synthetic", "prior": {"p_front": 0.8}},
        {"prompt": "a head", "steps": 9},
    ]
    jobs = expand_jobs(items, tmp_path, methods=("sds", "esd"), seeds=2)
    assert [j.name for j in jobs] == [
        "a-head-sds-s0",
        "a-head-sds-s1",
        "a-head-esd-s0",
        "a-head-esd-s1",
        "a-head-job2-sds-s0",
        "a-head-job2-sds-s1",
        "a-head-job2-esd-s0",
        "a-head-job2-esd-s1",
    ]
    first = jobs[3].config
    assert (first.distill.method, first.seed, first.out) == ("esd", 1, tmp_path / "a-head-esd-s1")
    assert first.prior.name == "synthetic" and first.prior.p_front == 0.8
    assert first.prior.num_images == 256 and first.background == "white"  # the synthetic defaults underneath
    assert first.psi.name == "residual" and first.steps == 1200
    assert jobs[4].config.prior.name == "sd" and jobs[4].config.steps == 9
    # A job of esd-gs 0.1 (prior: synthetic, synthetic: {...}) is the same job; --preset is every job's default.
    old = expand_jobs([{"prompt": "a head", "prior": "synthetic", "synthetic": {"p_front": 0.8}}], tmp_path)
    new = expand_jobs([{"prompt": "a head", "prior": {"p_front": 0.8}}], tmp_path, preset_name="synthetic")
    assert old[0].config == new[0].config == replace(jobs[2].config, seed=0, out=old[0].config.out)
    own = expand_jobs([{"prompt": "x", "method": "vsd", "seed": 4}], tmp_path)
    assert [(j.name, j.config.distill.method, j.config.seed) for j in own] == [("x-vsd-s4", "vsd", 4)]


def test_job_folders_never_collide(tmp_path):
    with pytest.raises(UserError, match="already another job's"):
        expand_jobs([{"prompt": "a head"}, {"prompt": "a head", "steps": 9}, {"prompt": "a head job2"}], tmp_path)
    jobs = expand_jobs([{"prompt": "a head", "prior": {"model": str(tmp_path)}}], Path("relative-out"))
    assert jobs[0].config.out.is_absolute() and jobs[0].config.prior.model == str(tmp_path.resolve())
    assert expand_jobs([{"prompt": "a head"}], tmp_path)[0].config.prior.model == "sd2.1-base"  # a family name stays


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--methods", "sds,foo"], "unknown method 'foo'"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--config", "nowhere.yaml"], "config file nowhere.yaml does not exist"),
        (["--preset", "nope"], "--preset"),
        (["--prior", "synthetic"], "--preset synthetic"),  # esd-gs 0.1's spelling
    ],
)
def test_bad_batch_options_are_one_line(tmp_path, capsys, args, message):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a head\n")
    assert main(["batch", str(jobs), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- the worker's rules
def test_worker_reuses_its_prior_skips_finished_and_refuses_other_settings(tmp_path):
    jobs = expand_jobs(
        read_job_file(small_jobs(tmp_path / "j.yaml", ["a head", "a red head"])),
        tmp_path / "out",
        methods=("sds", "esd"),
        steps=4,
    )
    priors = PriorCache()
    results = [run_job(j.name, j.config, priors) for j in jobs]
    assert [r.status for r in results] == ["finished"] * 4
    assert priors.loads == 2  # one synthetic prior per prompt, each reused by its two methods
    assert all((tmp_path / "out" / j.name / "scene.ply").is_file() for j in jobs)
    assert "done" in (tmp_path / "out" / jobs[0].name / "batch.log").read_text()  # the job's console output
    again = run_job(jobs[0].name, jobs[0].config, priors)
    assert again.status == "skipped" and priors.loads == 2
    before = (tmp_path / "out" / jobs[1].name / "scene.ply").read_bytes()
    other = run_job(jobs[1].name, replace(jobs[1].config, steps=5), priors)  # finished, but with other settings
    assert other.status == "failed" and "other settings" in other.reason
    (tmp_path / "out" / jobs[1].name / "run.json").write_text('{"status": "failed", "step": 1, "steps": 4}')
    assert "other settings" in run_job(jobs[1].name, replace(jobs[1].config, steps=5), priors).reason
    assert (tmp_path / "out" / jobs[1].name / "scene.ply").read_bytes() == before  # never removed
    (tmp_path / "out" / jobs[2].name / "config.yaml").unlink()  # files, but no run of this batch
    foreign = run_job(jobs[2].name, jobs[2].config, priors)
    assert foreign.status == "failed" and "not a run of this batch" in foreign.reason
    assert (tmp_path / "out" / jobs[2].name / "scene.ply").is_file()


def test_a_batch_on_the_synthetic_prior_shows_each_prompts_object(tmp_path):
    """Issue 30: "a head" and "a red car" gave byte-identical scenes. Each job's prior is now the object its prompt
    names; a job whose prompt names none is refused, with the names, before any job runs."""
    items = read_job_file(small_jobs(tmp_path / "j.yaml", ["a head", "a red car"]))
    jobs = expand_jobs(items, tmp_path / "out", steps=3)
    priors = PriorCache()
    assert [run_job(j.name, j.config, priors).status for j in jobs] == ["finished"] * 2
    head, car = ((tmp_path / "out" / j.name / "scene.ply").read_bytes() for j in jobs)
    assert head != car and priors.loads == 2
    with pytest.raises(UserError, match="job 2 .*'a plush dragon toy' names none: name one of head, car, house"):
        expand_jobs(read_job_file(small_jobs(tmp_path / "k.yaml", ["a head", "a plush dragon toy"])), tmp_path / "o")


def test_a_killed_workers_run_resumes_from_its_checkpoint(tmp_path):
    """run.json still says "running" (the worker was killed) and a checkpoint is there: the job resumes."""
    items = read_job_file(small_jobs(tmp_path / "j.yaml", ["a head"]))
    items[0]["output"] = {**items[0]["output"], "checkpoint_every": 0.5}
    (job,) = expand_jobs(items, tmp_path / "out", steps=6)
    priors = PriorCache()
    assert run_job(job.name, job.config, priors).status == "finished"
    run = tmp_path / "out" / job.name
    (run / "run.json").write_text('{"status": "running", "step": 3, "steps": 6}')
    (run / "scene.ply").unlink()
    again = run_job(job.name, job.config, priors)
    assert (again.status, again.resumed) == ("finished", True) and (run / "scene.ply").is_file()


def test_a_shared_unet_psi_hands_the_prior_back_unchanged(tmp_path, monkeypatch):
    """Two ESD jobs (LoRA in phi's own UNet) in one worker: after each, the UNet computes exactly the pretrained
    phi's UNet again (the raw UNet pass, adapters and camera embedding included), and the second job runs."""
    from esd_gs.priors import StableDiffusionPrior

    model = build_tiny_stable_diffusion(tmp_path / "sd")
    items = [
        {
            "prompt": "a head",
            "prior": {"model": str(model)},
            "resolution": 64,
            "steps": 3,
            "init": {"num_points": 300},
            "psi": {"shared_unet": True, "lr": 1e-2},
            "output": SMALL_OUTPUT,
        }
    ]
    jobs = expand_jobs(items, tmp_path / "out", methods=("esd",), seeds=2)
    fresh = StableDiffusionPrior.from_pretrained(str(model), announce=lambda _: None)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    hidden = fresh.text_embeddings("a head", "", False).plain.expand(2, -1, -1)
    t = torch.tensor([300, 700])

    def raw_unet(prior):
        with torch.no_grad():
            return prior.unet(x, t, encoder_hidden_states=hidden).sample

    expected = raw_unet(fresh)
    priors = PriorCache()
    monkeypatch.setattr(StableDiffusionPrior, "restore", lambda self: None)  # first without the hand-back
    assert run_job(jobs[0].name, jobs[0].config, priors).status == "finished"
    (prior,) = priors.priors.values()
    assert list(prior.unet.peft_config) == ["default"]  # psi's LoRA and camera MLP are still in phi's UNet
    with pytest.raises(ValueError, match="class_labels"):
        raw_unet(prior)
    monkeypatch.undo()
    prior.restore()
    assert torch.equal(raw_unet(prior), expected) and prior.unet.class_embedding is None
    assert not getattr(prior.unet, "peft_config", None)
    second = run_job(jobs[1].name, jobs[1].config, priors)  # a second psi goes into the same UNet
    assert (second.status, priors.loads) == ("finished", 1)
    assert torch.equal(raw_unet(prior), expected) and prior.shared_unet_roles is None


# ---------------------------------------------------------------------------------------------- on Ray
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A real Ray head on this machine with 2 CPUs; the batches join it with --address. (Its teardown, ray stop
    --force, stops every Ray of this machine.)"""
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    port = _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    started = subprocess.run(
        [
            str(ray_cli),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    yield "auto"  # the cluster this machine runs (an explicit host:port would do the same from another machine)
    subprocess.run([str(ray_cli), "stop", "--force"], capture_output=True, timeout=120)


def batch(*args, wait=True):
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="150", RAY_USAGE_STATS_ENABLED="0")
    command = [sys.executable, "-m", "esd_gs", "batch", *map(str, args)]
    if wait:
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def state(out: Path) -> dict:
    return json.loads((out / "batch.json").read_text())["jobs"]


def test_batch_of_synthetic_jobs_with_a_failing_one(ray_cluster, tmp_path):
    jobs = small_jobs(tmp_path / "jobs.yaml", ["a head"])
    data = yaml.safe_load(jobs.read_text())
    ghost = {**data[0]["prior"], "reference": [str(tmp_path / "missing.ply")]}
    data.append({**data[0], "prompt": "a ghost", "prior": ghost})
    jobs.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    done = batch(
        jobs, "--out", out, "--methods", "sds,esd", "--seeds", 2, "--steps", 6, "--workers", 2, "--address", ray_cluster
    )
    assert done.returncode == 1, done.stderr[-3000:]  # one job failed, the rest finished
    jobs_state = state(out)
    failed = {n: s for n, s in jobs_state.items() if s["status"] == "failed"}
    assert sorted(failed) == ["a-ghost-esd-s0", "a-ghost-esd-s1", "a-ghost-sds-s0", "a-ghost-sds-s1"]
    assert all("missing.ply does not exist" in s["reason"] for s in failed.values())
    finished = [n for n, s in jobs_state.items() if s["status"] == "finished"]
    assert len(finished) == 4 and all((out / n / "scene.ply").is_file() for n in finished)
    # 4 jobs of one prior on 2 workers: some worker ran two or more, yet no worker built the prior twice
    assert max(s["prior_loads"] for s in jobs_state.values() if s["status"] == "finished") == 1
    index = (out / "index.md").read_text()
    assert all(n in index for n in jobs_state) and "missing.ply does not exist" in index
    page = (out / "index.html").read_text()
    assert page.count("<figure") == 8 and 'href="a-head-sds-s0/scene.ply"' in page
    assert "failed a-ghost-sds-s0" in " ".join(done.stderr.split())


def test_batch_interrupted_then_rerun_finishes_only_what_was_missing(ray_cluster, tmp_path):
    jobs = small_jobs(tmp_path / "jobs.txt.yaml", ["a head", "a red head", "a blue head"])
    out = tmp_path / "out"
    args = (jobs, "--out", out, "--steps", 200, "--workers", 1, "--address", ray_cluster)
    proc = batch(*args, wait=False)
    deadline = time.time() + 600
    second = out / "a-red-head-esd-s0" / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if second.exists() and len(second.read_text().splitlines()) >= 20:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    first_state = state(out)
    assert first_state["a-head-esd-s0"]["status"] == "finished"
    assert first_state["a-red-head-esd-s0"]["status"] == "interrupted"
    assert first_state["a-blue-head-esd-s0"]["status"] == "pending"
    assert json.loads((out / "a-red-head-esd-s0" / "run.json").read_text())["status"] == "interrupted"
    finished_scene = (out / "a-head-esd-s0" / "scene.ply").stat().st_mtime_ns
    again = batch(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    final = state(out)
    assert [final[n]["status"] for n in ("a-head-esd-s0", "a-red-head-esd-s0", "a-blue-head-esd-s0")] == [
        "skipped",
        "finished",
        "finished",
    ]
    assert final["a-red-head-esd-s0"]["resumed"] is True
    assert (out / "a-head-esd-s0" / "scene.ply").stat().st_mtime_ns == finished_scene  # not redone
    metrics = (out / "a-red-head-esd-s0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["step"] for m in metrics][-1] == 200


def test_batch_on_the_tiny_stable_diffusion_with_a_local_ray(tmp_path):
    """No --address: a new Ray starts on this machine. Four SD jobs in one worker: one model load."""
    pytest.importorskip("ray")
    model = build_tiny_stable_diffusion(tmp_path / "sd")
    item = {
        "prompt": "a head",
        "prior": {"model": str(model)},
        "resolution": 64,
        "init": {"num_points": 300},
        "output": SMALL_OUTPUT,
    }
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(yaml.safe_dump([item]))
    out = tmp_path / "out"
    done = batch(jobs, "--out", out, "--methods", "sds", "esd", "--seeds", 2, "--steps", 3)
    assert done.returncode == 0, done.stderr[-3000:]
    final = state(out)
    assert [s["status"] for s in final.values()] == ["finished"] * 4
    assert [s["prior_loads"] for s in final.values()] == [1] * 4  # one worker, one model load for four jobs
    last = [line for line in done.stderr.splitlines() if line.startswith("batch ")][-1]  # issue 30: the last line
    assert "4/4 100%" in last and "running 0" in last and "running 1" not in last, last
    assert "Token authentication" not in done.stderr  # Ray's banner stays off the user's terminal
    index = (out / "index.md").read_text()  # the gallery shows the gradient's size, not the target trick's "loss"
    assert "| grad (rms) |" in index and "| loss |" not in index
    grad = json.loads((out / next(iter(final)) / "metrics.jsonl").read_text().splitlines()[-1])["grad_rms"]
    assert f"| {grad:.3g} |" in index
    assert all((out / n / "scene.ply").is_file() and (out / n / "contact_sheet.png").is_file() for n in final)


def test_without_ray_batch_says_how_to_install_it(tmp_path):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a head\n")
    code = "import sys; sys.modules['ray'] = None; from esd_gs.cli.main import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "batch", str(jobs), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 2 and "pip install 'esd-gs[batch]'" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
