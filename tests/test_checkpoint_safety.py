"""Saving a checkpoint never destroys the previous one: full disks, a second signal and SIGKILL mid-save."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from small_disk import small_disk

from esd_gs.training import checkpoint
from esd_gs.training.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def save(directory, step, fill):
    save_checkpoint(directory, {"scene.means": torch.full((1000, 3), float(fill))}, {"step": step})  # 12 kB


def assert_holds(directory, step, fill):
    tensors, meta = load_checkpoint(directory)
    assert meta["step"] == step and torch.equal(tensors["scene.means"], torch.full((1000, 3), float(fill)))


def test_a_full_disk_during_the_tensor_write_keeps_the_old_checkpoint(tmp_path):
    with small_disk(tmp_path / "disk", 64) as disk:  # room for one 12 kB checkpoint, not for a 48 kB one beside it
        save(disk, 10, 1)
        with pytest.raises(OSError) as failure:
            save_checkpoint(disk, {"scene.means": torch.full((4000, 3), 2.0)}, {"step": 20})
        assert failure.value.errno == errno.ENOSPC
        assert_holds(disk, 10, 1)
        assert [p.name for p in disk.iterdir() if p.name.startswith(".")] == []  # no half-written leftovers


def test_a_second_ctrl_c_while_switching_keeps_a_complete_checkpoint(tmp_path, monkeypatch):
    save(tmp_path, 10, 1)
    real_dumps = json.dumps

    def interrupted_dumps(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.json, "dumps", interrupted_dumps)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 20, 2)
    monkeypatch.setattr(checkpoint.json, "dumps", real_dumps)
    assert_holds(tmp_path, 10, 1)
    save(tmp_path, 30, 3)  # the next save works and leaves one tensor file
    assert_holds(tmp_path, 30, 3)
    assert len(list(tmp_path.glob("tensors*.safetensors"))) == 1


def test_sigkill_in_the_middle_of_a_save_keeps_the_old_checkpoint(tmp_path):
    """A real process killed with SIGKILL while its tensor file is half written (as after SIGTERM, then SIGKILL)."""
    marker = tmp_path / "writing"
    script = textwrap.dedent(f"""
        import time, torch
        from pathlib import Path
        from esd_gs.training import checkpoint
        directory = Path({str(tmp_path / "ckpt")!r})
        checkpoint.save_checkpoint(directory, {{"scene.means": torch.full((1000, 3), 1.0)}}, {{"step": 10}})
        real_write = checkpoint.atomic_write_bytes
        def slow_chunks(chunks):
            data = b"".join(bytes(c) for c in chunks)
            yield data[:4096]
            Path({str(marker)!r}).touch()
            time.sleep(120)
            yield data[4096:]
        checkpoint.atomic_write_bytes = lambda path, chunks: real_write(path, slow_chunks(chunks))
        checkpoint.save_checkpoint(directory, {{"scene.means": torch.full((1000, 3), 2.0)}}, {{"step": 20}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), "the child never reached the second save"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert any(p.name.startswith(".") for p in (tmp_path / "ckpt").iterdir())  # the half-written temporary file
    assert_holds(tmp_path / "ckpt", 10, 1)
    save(tmp_path / "ckpt", 30, 3)  # the leftover half file is cleaned up by the next save
    assert [p.name for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".")] == []


def test_a_checkpoint_of_the_first_layout_still_loads(tmp_path):
    save_file({"scene.means": torch.full((1000, 3), 5.0)}, str(tmp_path / "tensors.safetensors"))
    (tmp_path / "meta.json").write_text(json.dumps({"step": 7}))
    assert_holds(tmp_path, 7, 5)
