"""Scheduling a batch on Ray: one ``BatchWorker`` actor per slot, each given the next job as soon as it is free.

- Slots: with GPUs in the cluster and jobs that use them, one worker per GPU (``num_gpus=1``, Ray sets its
  ``CUDA_VISIBLE_DEVICES``); otherwise ``workers`` CPU workers (default 1), each given an equal share of the
  smallest node's CPUs (Ray sets its thread count). ``address`` None starts a new Ray on this machine (never one
  left running by ``ray start``); otherwise it joins that cluster: an address that cannot answer (``check_address``:
  its form, its host, a TCP connection) is refused in one line before Ray is asked, and a join ends after
  ``JOIN_TIMEOUT_S`` at the latest.
- Progress: one rich bar over the batch (done / running / failed, ETA) and a line per finished job.
- Ctrl-C or SIGTERM: no further job starts; every running job is sent SIGTERM (by a task on its own node), saves
  its checkpoint and stops; the batch then writes its files and exits 130 / 143. Re-running the same command
  resumes. A worker that dies (killed, out of memory) fails its job and is replaced. During the start-up (Ray
  starting or joining, the workers being placed) the signal shuts Ray down and the command ends in one line,
  ``esd-gs: interrupted``, before the output folder is made.
- ``batch.json`` (the state of every job) is rewritten after each job; index.md / index.html at the end.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from ..atomic import atomic_path
from ..environment import ensure_writable_dir, removed_if_left_empty
from ..errors import Stopped, UserError, public_names
from ..progress import console, make_progress, stage
from .gallery import write_gallery
from .jobs import Job
from .worker import worker_class

STATE = "batch.json"


def import_ray():
    """Ray, imported with its C++ failure-signal handler disabled in this process (Ray's own setting,
    ``RAY_DISABLE_FAILURE_SIGNAL_HANDLER``, read when Ray is imported: it would turn a SIGTERM into a native stack dump
    and an abort). The variable is taken back out of the environment at once: Ray's own processes, started later,
    keep their handler."""
    unset = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER" not in os.environ
    if unset:
        os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
    try:
        import ray
    except ImportError:
        raise UserError("esd-gs batch runs on Ray, which is not installed: pip install 'esd-gs[batch]'") from None
    finally:
        if unset:
            os.environ.pop("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", None)
    return ray


RESOLVE_TIMEOUT_S = 10.0
"""Longest wait for a host name of --address to resolve."""
CONNECT_TIMEOUT_S = 10.0
"""Longest wait for the cluster at --address to accept a connection, before Ray is asked to join it."""
JOIN_TIMEOUT_S = 120.0
"""Longest wait for Ray to join a cluster that accepted the connection; then the command ends in one line."""
_ADDRESS_FORMS = "use auto, HOST:PORT (a cluster's head, e.g. 10.0.0.5:6379) or ray://HOST:PORT (e.g. ray://HOST:10001)"
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")


def check_address(address: str | None, resolve: bool = True) -> tuple[str, int] | None:
    """``--address`` -> (host, port) of the cluster to join, or None to start Ray here (None or 'local') or to let
    Ray find the cluster this machine runs ('auto'). Anything else is ``[ray://]HOST:PORT``: HOST an IP address (an
    IPv6 one in brackets) or a name that resolves (``resolve``: within ``RESOLVE_TIMEOUT_S``), PORT in 1..65535.
    Otherwise one ``UserError``: Ray itself would wait on such an address without end."""
    if address is None or address in ("local", "auto"):
        return None
    rest = address
    if "://" in address:
        scheme, rest = address.split("://", 1)
        if scheme != "ray":
            raise UserError(f"--address {address}: Ray joins no {scheme}:// address; {_ADDRESS_FORMS}")
    host, colon, port = rest.rpartition(":")
    if not colon or not host or not port:
        raise UserError(f"--address {address} is not HOST:PORT; {_ADDRESS_FORMS}")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise UserError(f"--address {address}: the port must be a number in 1..65535, got {port!r}")
    bracketed = host.startswith("[") and host.endswith("]")
    name = host[1:-1] if bracketed else host
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:
        if (ip.version == 6) != bracketed:
            raise UserError(f"--address {address}: write an IPv6 address in brackets ([::1]:6379), and only one")
        return name, int(port)
    if bracketed or re.fullmatch(r"[0-9.]+", name):
        raise UserError(f"--address {address}: {name} is not a valid IP address")
    if not _HOST_NAME.fullmatch(name) or len(name) > 253:
        raise UserError(f"--address {address}: {name!r} is neither a host name nor an IP address")
    if resolve and not _resolves(name):
        raise UserError(f"--address {address}: the host name {name} does not resolve")
    return name, int(port)


def _resolves(host: str) -> bool:
    """Whether ``host`` resolves within ``RESOLVE_TIMEOUT_S`` (the look-up runs in a thread: it cannot be bounded)."""
    answer: list[bool] = []

    def look_up() -> None:
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            answer.append(True)
        except (OSError, UnicodeError):
            answer.append(False)

    thread = threading.Thread(target=look_up, daemon=True)
    thread.start()
    thread.join(RESOLVE_TIMEOUT_S)
    return bool(answer and answer[0])


def _check_answers(address: str, host: str, port: int) -> None:
    """One line unless something accepts a TCP connection at host:port within ``CONNECT_TIMEOUT_S`` (a closed port,
    an unreachable host: Ray would retry for minutes)."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc) or type(exc).__name__)
        raise UserError(f"--address {address}: nothing answers at {host}:{port} ({reason.lower()})") from None


def _uses_gpu(jobs: list[Job], gpus: float) -> bool:
    wants = [job.config.device for job in jobs]
    if any(d.startswith("cuda") for d in wants) and gpus < 1:
        raise UserError("jobs ask for --device cuda but the Ray cluster has no GPU")
    return gpus >= 1 and any(d.startswith("cuda") or d == "auto" for d in wants)


def _check_local_gpus(jobs: list[Job]) -> None:
    """Before a Ray of this machine starts: jobs that ask for CUDA need a GPU here (the GPUs Ray would find are the
    ones torch sees: both follow CUDA_VISIBLE_DEVICES)."""
    import torch

    if any(job.config.device.startswith("cuda") for job in jobs) and torch.cuda.device_count() < 1:
        raise UserError("jobs ask for --device cuda but this machine has no CUDA GPU: use --device cpu or --address")


def _stop_worker(ray, node: str, pid: int) -> None:
    """SIGTERM to one worker process, from a task pinned to its own node (never a local ``os.kill``: with a Ray
    client the driver's machine is not the worker's). A worker that is already gone is fine."""
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
    """Run every job; returns the exit code: 0 when all finished, 1 when some failed, 128 + signal when stopped.

    From Ray's start to its shutdown, SIGINT and SIGTERM are only recorded (``_signals_recorded``) and acted on
    where it is safe: during the start-up (Ray starting or joining, the workers being placed) a signal shuts Ray down
    and ends the command in one line (``Stopped``), before ``out`` is made; once jobs run, they save their
    checkpoints and the batch writes its files (``_schedule``)."""
    ray = import_ray()
    target = check_address(address)
    if target is not None:
        _check_answers(address, *target)
    elif address in (None, "local"):
        _check_local_gpus(jobs)
    stop: list[int] = []
    with _signals_recorded(stop):
        joining = address not in (None, "local")  # 'auto' joins this machine's
        with stage("starting Ray on this machine") if not joining else contextlib.nullcontext():
            _start_ray(ray, address, stop, joining)
        with removed_if_left_empty(out):  # made once the workers are placed: no empty folder if it fails
            try:
                return _schedule(ray, jobs, out, workers, eval_config, stop)
            finally:
                ray.shutdown()  # the workers stop writing before any clean-up


@contextlib.contextmanager
def _signals_recorded(stop: list[int]):
    """SIGINT and SIGTERM append to ``stop`` (the first one counts) for the block, instead of raising anywhere."""

    def record(signum, _frame) -> None:
        if not stop:
            stop.append(signum)

    old = {sig: signal.signal(sig, record) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield record
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _start_ray(ray, address: str | None, stop: list[int], joining: bool) -> None:
    """``ray.init``, as one step that a signal cannot cut in half, that prints nothing and that cannot wait forever.

    - A signal meanwhile is recorded in ``stop`` (``_signals_recorded``): Ray's own SIGTERM handlers (``sys.exit``
      in the middle of its start, leaving its processes running) are not installed, and its C++ failure-signal
      handler, which would turn SIGTERM into a stack dump and an abort, is disabled in this process
      (``import_ray``). Once ``ray.init`` has returned, Ray is shut down and the command ends (``Stopped``).
    - Ray's own logging settings keep its notices off the terminal: the token-authentication banner (its "ray"
      logger at ERROR: ``configure_logging=True, logging_level=logging.ERROR``); when joining a cluster, what its
      C++ core writes while it retries goes to a temporary file (``_native_stderr_held``).
    - Joining a cluster (HOST:PORT, or 'auto') ends after ``JOIN_TIMEOUT_S`` at the latest, in one line (exit code
      2), and a signal meanwhile ends it at once (``esd-gs: interrupted``).
    """
    record = signal.getsignal(signal.SIGTERM)
    utils = getattr(getattr(ray, "_private", None), "utils", None)
    set_sigterm_handler = getattr(utils, "set_sigterm_handler", None)
    with _native_stderr_held() if joining else contextlib.nullcontext(2) as stderr_fd:
        watchdog = threading.Timer(JOIN_TIMEOUT_S, _give_up_joining, (address, stderr_fd)) if joining else None
        wakeup = _leave_on_signal(stderr_fd) if joining else None
        try:
            if set_sigterm_handler is not None:
                utils.set_sigterm_handler = lambda handler: None  # the recording handler stays for the whole start
            if watchdog is not None:
                watchdog.daemon = True
                watchdog.start()
            ray.init(
                address=address or "local",  # "local": a new Ray of this machine, never a cluster left running here
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=True,
                logging_level=logging.ERROR,
            )
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError: an address that does not answer
            if not stop:
                failure = f"could not start or join Ray at {address or 'this machine'}: {_line(exc)}"
                raise UserError(failure) from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if set_sigterm_handler is not None:
                utils.set_sigterm_handler = set_sigterm_handler
            if wakeup is not None:
                signal.set_wakeup_fd(wakeup[0])
                os.close(wakeup[1])  # the listening thread reads its end and stops
            for sig in (signal.SIGINT, signal.SIGTERM):  # taken back, should anything in Ray have set its own
                signal.signal(sig, record)
    if stop:
        ray.shutdown()
        raise Stopped(stop[0])


@contextlib.contextmanager
def _native_stderr_held():
    """File descriptor 2 on a temporary file for the block, which yields the terminal's: what Ray's C++ core writes
    while it retries a cluster that does not answer ("Failed to connect to GCS ...") stays off the terminal (its
    log-level setting does not reach that logger). Only while joining: no Ray process is started here then."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield saved
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _give_up_joining(address: str, stderr_fd: int) -> None:
    """``JOIN_TIMEOUT_S`` passed in ``ray.init``, which cannot be interrupted: one line and exit code 2, now (nothing
    has been written yet)."""
    _leave(stderr_fd, f"esd-gs: error: could not join Ray at {address}: no answer within {JOIN_TIMEOUT_S:.0f} s", 2)


def _leave_on_signal(stderr_fd: int) -> tuple[int, int]:
    """While ``ray.init`` joins a cluster (nothing of Ray runs here yet), SIGINT / SIGTERM end the command at once,
    even while Ray waits in C++ (where no Python handler runs): the signal's number reaches a thread through
    ``signal.set_wakeup_fd``. Returns (the wakeup fd to restore, the pipe's write end to close afterwards)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end)

    def listen() -> None:
        try:
            got = os.read(read_end, 1)
        finally:
            os.close(read_end)
        if got and got[0] in (signal.SIGINT, signal.SIGTERM):
            _leave(stderr_fd, "esd-gs: interrupted", 128 + got[0])

    threading.Thread(target=listen, daemon=True).start()
    return previous, write_end


def _leave(stderr_fd: int, line: str, code: int) -> None:
    """End the command at once, from a thread or a signal handler while ``ray.init`` waits on a cluster: one line on
    the terminal's stderr, then ``os._exit`` (no Ray process was started here; nothing has been written)."""
    os.write(stderr_fd, (line + "\n").encode())
    os._exit(code)


def _line(exc: BaseException) -> str:
    return public_names((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:200]


def _placed(ray, actors: list, stop: list[int], what: str, timeout: float = 600.0) -> list:
    """Each actor's ``where()``, once all are placed; [] as soon as a signal is recorded in ``stop``."""
    pending = {actor.where.remote(): actor for actor in actors}
    deadline = time.monotonic() + timeout
    while not stop:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
        if len(ready) == len(pending):
            return ray.get(list(pending))
        if time.monotonic() > deadline:
            raise UserError(f"Ray could not place {what} within {timeout / 60:.0f} minutes")
    return []


def _schedule(ray, jobs: list[Job], out: Path, workers: int | None, eval_config, stop: list[int]) -> int:
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
    with stage(f"starting {count} worker(s)"):
        where = dict(zip(actors, _placed(ray, actors, stop, f"{count} worker(s) with {options}")))
    if stop:  # still starting up: nothing has run, nothing is written
        raise Stopped(stop[0])
    ensure_writable_dir(out)
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
    stopping = False
    counts = {"done": 0, "failed": 0}
    with make_progress("done", "running", "failed", speed_window=24 * 3600) as progress:
        task = progress.add_task("batch", total=len(jobs), unit="job", done=0, running=0, failed=0)
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
                # the counts with the job just ended: the last line says "running 0" (issue 30)
                progress.update(task, advance=1, done=counts["done"], running=len(running), failed=counts["failed"])
                _write_state(out, state)
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
