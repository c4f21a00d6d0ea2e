"""Scheduling a batch on Ray: one ``BatchWorker`` actor per slot, each given the next job as soon as it is free.

- Slots: with GPUs in the cluster and jobs that use them, one worker per GPU (``num_gpus=1``, Ray sets its
  ``CUDA_VISIBLE_DEVICES``); otherwise ``workers`` CPU workers (default 1), each given an equal share of the
  smallest node's CPUs (Ray sets its thread count). ``address`` None starts a new Ray on this machine (never one
  left running by ``ray start``); otherwise it joins that cluster.
- Progress: one rich bar over the batch (done / running / failed, ETA) and a line per finished job.
- Ctrl-C or SIGTERM: no further job starts; every running job is sent SIGTERM (by a task on its own node), saves
  its checkpoint and stops; the batch then writes its files and exits 130 / 143. Re-running the same command
  resumes. A worker that dies (killed, out of memory) fails its job and is replaced.
- ``batch.json`` (the state of every job) is rewritten after each job; index.md / index.html at the end.
"""

from __future__ import annotations

import json
import signal
import time
from collections import deque
from pathlib import Path

from ..atomic import atomic_path
from ..errors import UserError
from ..progress import console, make_progress
from .gallery import write_gallery
from .jobs import Job
from .worker import worker_class

STATE = "batch.json"


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("esd-gs batch runs on Ray, which is not installed: pip install 'esd-gs[batch]'") from None
    return ray


def _uses_gpu(jobs: list[Job], gpus: float) -> bool:
    wants = [job.config.device for job in jobs]
    if any(d.startswith("cuda") for d in wants) and gpus < 1:
        raise UserError("jobs ask for --device cuda but the Ray cluster has no GPU")
    return gpus >= 1 and any(d.startswith("cuda") or d == "auto" for d in wants)


def _stop_worker(ray, node: str, pid: int) -> None:
    """SIGTERM to one worker process, from a task pinned to its own node (never a local ``os.kill``: with a Ray
    client the driver's machine is not the worker's). A worker that is already gone is fine."""
    import os

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def kill(target: int) -> None:
        try:
            os.kill(target, signal.SIGTERM)
        except ProcessLookupError:
            pass

    try:
        ray.get(
            kill.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(pid), timeout=60
        )
    except Exception as exc:  # the node is gone, or the task could not be placed: the job just ends without a save
        console.print(f"[yellow]could not stop the worker {pid}: {_line(exc)}[/yellow]")


def run_batch(
    jobs: list[Job], out: Path, address: str | None = None, workers: int | None = None, eval_config=None
) -> int:
    """Run every job; returns the exit code: 0 when all finished, 1 when some failed, 128 + signal when stopped."""
    ray = import_ray()
    try:
        ray.init(
            address=address or "local",  # "local": a new Ray of this machine, never a cluster left running here
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: an address that does not answer
        raise UserError(f"could not start or join Ray at {address or 'this machine'}: {_line(exc)}") from None
    try:
        return _schedule(ray, jobs, out, workers, eval_config)
    finally:
        ray.shutdown()


def _line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _schedule(ray, jobs: list[Job], out: Path, workers: int | None, eval_config) -> int:
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    gpus = sum(float(n.get("GPU", 0)) for n in nodes)
    cpus = sum(float(n.get("CPU", 0)) for n in nodes)
    smallest = min((float(n.get("CPU", 0)) for n in nodes), default=1.0)  # a share every node can give
    if _uses_gpu(jobs, gpus):
        count = min(int(gpus), workers or int(gpus), len(jobs))
        per_gpu = min(float(n.get("CPU", 0)) / max(1.0, float(n.get("GPU", 0))) for n in nodes if n.get("GPU"))
        options = {"num_gpus": 1, "num_cpus": max(1, int(per_gpu))}
    else:
        count = min(workers or 1, len(jobs))
        if count > cpus:
            raise UserError(f"--workers {count} but the Ray cluster has {cpus:g} CPUs")
        per_node = -(-count // max(1, len(nodes)))  # workers per node, rounded up
        options = {"num_gpus": 0, "num_cpus": max(1, int(smallest // per_node))}
    Worker = worker_class(ray)
    actors = [Worker.options(**options).remote(eval_config) for _ in range(count)]
    try:
        where = dict(zip(actors, ray.get([a.where.remote() for a in actors], timeout=600)))
    except ray.exceptions.GetTimeoutError:
        raise UserError(f"Ray could not place {count} worker(s) with {options} within 10 minutes") from None
    state = {
        job.name: {
            "status": "pending",
            "prompt": job.config.prompt,
            "method": job.config.distill.method,
            "seed": job.config.seed,
        }
        for job in jobs
    }
    queue, idle, running = deque(jobs), list(actors), {}
    stop: list[int] = []
    stopping = False

    def on_signal(signum, _frame):
        if not stop:
            stop.append(signum)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    counts = {"done": 0, "failed": 0}
    try:
        with make_progress("done", "running", "failed", speed_window=24 * 3600) as progress:
            task = progress.add_task("batch", total=len(jobs), done=0, running=0, failed=0)
            while queue or running:
                if stop and not stopping:
                    stopping = True
                    queue.clear()
                    name = signal.Signals(stop[0]).name
                    progress.console.print(f"stopping ({name}): the running jobs save their checkpoints")
                    for actor, _job in running.values():
                        _stop_worker(ray, *where[actor])
                while queue and idle and not stop:
                    job, actor = queue.popleft(), idle.pop()
                    running[actor.run.remote(job.name, job.config)] = (actor, job)
                    state[job.name]["status"] = "running"
                progress.update(task, done=counts["done"], running=len(running), failed=counts["failed"])
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in ready:
                    actor, job = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:  # the worker process died (killed, out of memory)
                        result = {"name": job.name, "status": "failed", "reason": f"worker died: {_line(exc)}"}
                        ray.kill(actor)  # its resources go back before a new one is placed
                        actor = None if stopping else Worker.options(**options).remote(eval_config)
                        if actor is not None:
                            where[actor] = ray.get(actor.where.remote(), timeout=600)
                    except ray.exceptions.RayError as exc:  # the job raised past run_job: the worker is fine
                        result = {"name": job.name, "status": "failed", "reason": _line(exc)}
                    if actor is not None:
                        idle.append(actor)
                    state[job.name].update(result)
                    _report(progress, job, result, counts)
                    progress.advance(task)
                    _write_state(out, state)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    _write_state(out, state)
    write_gallery(out, jobs, state)
    console.print(f"wrote {out / 'index.md'}, {out / 'index.html'}, {out / STATE}")
    if stop:
        return 128 + stop[0]
    return 1 if counts["failed"] else 0


def _report(progress, job: Job, result: dict, counts: dict) -> None:
    status = result["status"]
    if status in ("finished", "skipped"):
        counts["done"] += 1
        colour = "green" if status == "finished" else "cyan"
        note = f" in {result.get('seconds', 0):.0f} s" if status == "finished" else " (finished earlier)"
        if result.get("resumed"):
            note += ", resumed"
        progress.console.print(f"[{colour}]{status}[/{colour}] {job.name}{note}")
    elif status == "interrupted":
        progress.console.print(f"[yellow]interrupted[/yellow] {job.name}: {result.get('reason', '')}")
    else:
        counts["failed"] += 1
        progress.console.print(f"[red]failed[/red] {job.name}: {result.get('reason', '')}")


def _write_state(out: Path, state: dict) -> None:
    with atomic_path(out / STATE) as tmp:
        tmp.write_text(json.dumps({"updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "jobs": state}, indent=1))
