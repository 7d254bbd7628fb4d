"""Unusable checkpoints and failed checkpoint writes: one clear error naming the file, nothing
already written lost."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from sgdlab.data import Dataset
from sgdlab.errors import UserError
from sgdlab.store import RunStore
from sgdlab.train import load_checkpoint, train

torch.set_num_threads(1)


def data(n: int = 32) -> Dataset:
    x = torch.randn(n + 8, 3, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    return Dataset(x[:n], y[:n], x[n:], y[n:], {"name": "t", "task": "classification",
                                               "num_outputs": 2})


def fit(width: int = 4, examples: int = 32, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 2))
    kw = {"epochs": 2, "batch_size": 8, **kw}
    return train(model, nn.CrossEntropyLoss(), data(examples),
                 torch.optim.SGD(model.parameters(), lr=0.1), progress=False, **kw)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "weights_only=False" not in msg, msg
    return msg


def test_unreadable_checkpoints_are_named_in_one_line(tmp_path):
    good = fit(checkpoint_dir=tmp_path / "ok").checkpoint
    blob = good.read_bytes()
    cases = {"empty.pt": (b"", "the file is empty"),
             "cut.pt": (blob[: len(blob) // 3], "truncated or corrupt"),
             "tail.pt": (blob[:-100], "truncated or corrupt"),
             "text.pt": (b"garbage" * 100, "not a checkpoint file")}
    for name, (content, needle) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError) as e:
            load_checkpoint(tmp_path / name)
        assert needle in one_line(e) and name in str(e.value)

    class Evil:                              # a pickle that would run code if unpickled
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"format": 1, "model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError) as e:
        load_checkpoint(tmp_path / "evil.pt")
    assert "pickled Python objects" in one_line(e) and not Path("pwned").exists()
    torch.save({"format": 1, "loop": {}}, tmp_path / "nomodel.pt")
    with pytest.raises(UserError) as e:
        load_checkpoint(tmp_path / "nomodel.pt", require=("model",))
    assert "has no 'model' entry (it holds: format, loop)" in one_line(e)


def test_a_checkpoint_whose_bytes_changed_on_disk_is_refused_not_loaded(tmp_path):
    """One flipped bit in the stored weights (a bad disk, a broken copy) still unpickles:
    the archive's CRC-32 of each entry is what tells. Resuming from it would continue from
    other weights than the run reached, silently."""
    fit(checkpoint_dir=tmp_path / "ok", max_steps=3)
    good = tmp_path / "ok" / "last.pt"
    weights = load_checkpoint(good)["model"]["0.weight"].numpy().tobytes()
    blob = bytearray(good.read_bytes())
    blob[blob.find(weights) + 5] ^= 0x01
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "last.pt").write_bytes(blob)
    with pytest.raises(UserError) as e:
        load_checkpoint(bad / "last.pt")
    msg = one_line(e)
    assert "last.pt" in msg and "corrupt" in msg and "data/0" in msg, msg
    with pytest.raises(UserError, match="corrupt"):
        fit(checkpoint_dir=bad, resume=True)


def test_resume_with_a_checkpoint_of_another_model_names_the_mismatch(tmp_path):
    fit(checkpoint_dir=tmp_path, max_steps=3)
    with pytest.raises(UserError) as e:
        fit(width=5, checkpoint_dir=tmp_path, resume=True)
    msg = one_line(e)
    assert "last.pt' does not fit this model" in msg and "size mismatch for 0.weight" in msg
    assert "[4, 3]" in msg and "[5, 3]" in msg


def test_resume_with_other_sampling_settings_is_refused_naming_each_difference(tmp_path):
    """The checkpoint's batch order (permutation, position in it) belongs to its training set
    and batch size: continued with others, a larger training set drew an empty batch (the
    run was recorded diverged on a NaN loss), a smaller or a new batch size went on without a
    word. The number of epochs may change (a run extended)."""
    fit(checkpoint_dir=tmp_path, max_steps=3)
    for change, needle in [({"examples": 40}, "the training set (32 -> 40 examples)"),
                           ({"examples": 20}, "the training set (32 -> 20 examples)"),
                           ({"batch_size": 5}, "batch_size (epoch 0: 8 -> 5)"),
                           ({"seed": 3}, "seed (0 -> 3)"),
                           ({"replacement": True}, "replacement (False -> True)"),
                           ({"drop_last": True}, "drop_last (False -> True)")]:
        with pytest.raises(UserError) as e:
            fit(checkpoint_dir=tmp_path, resume=True, **change)
        msg = one_line(e)
        assert "last.pt" in msg and needle in msg, (change, msg)
    with pytest.raises(UserError) as e:
        fit(checkpoint_dir=tmp_path, resume=True, examples=40, seed=3)
    assert "seed (0 -> 3), the training set (32 -> 40 examples)" in one_line(e)
    assert fit(checkpoint_dir=tmp_path, resume=True, epochs=3).steps == 12
    fit(checkpoint_dir=tmp_path / "later", max_steps=6)        # in epoch 1: both compared
    with pytest.raises(UserError) as e:
        fit(checkpoint_dir=tmp_path / "later", resume=True, batch_size=lambda e: 8 + 2 * e)
    assert "batch_size (epoch 1: 8 -> 10)" in one_line(e)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_fails_the_run_and_keeps_the_previous_checkpoint(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    ckpt_dir = tmp_path / "ckpt"
    first = fit(checkpoint_dir=ckpt_dir, max_steps=3, store=store)
    # the next checkpoint's temporary file is a device that is always full
    tmp = ckpt_dir / f".last.pt.{os.getpid()}.tmp"
    tmp.symlink_to("/dev/full")
    with pytest.raises(UserError) as e:
        fit(checkpoint_dir=ckpt_dir, resume=True, store=store, run_id=first.run_id)
    msg = one_line(e)
    assert "cannot write checkpoint" in msg and "no space left on device" in msg
    assert "the previous checkpoint is kept" in msg and not tmp.exists()
    assert load_checkpoint(ckpt_dir)["loop"]["step"] == 3           # still there, readable
    run = store.get_run(first.run_id)
    assert run["status"] == "failed" and "no space left on device" in run["message"]


def test_an_interrupt_while_saving_leaves_no_partial_file_behind(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, made an interrupt by the CLI) in the middle of a checkpoint write:
    the previous checkpoint stays, and the partial temporary file (named by the process id,
    so no later save reuses it: a checkpoint's size left per interrupt) is removed."""
    import sgdlab.train.checkpoint as checkpoint

    ckpt_dir = tmp_path / "ckpt"
    fit(checkpoint_dir=ckpt_dir, max_steps=3)

    def interrupted_save(obj, f):
        f.write(b"PK\x03\x04 the first bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        fit(checkpoint_dir=ckpt_dir, resume=True)
    monkeypatch.undo()
    assert [p.name for p in ckpt_dir.iterdir()] == ["last.pt"]
    assert load_checkpoint(ckpt_dir)["loop"]["step"] == 3


def test_the_partial_file_of_a_killed_save_goes_with_the_next_checkpoint(tmp_path):
    """SIGKILL while saving leaves ``.last.pt.<pid>.tmp`` (nothing runs to remove it; a
    checkpoint's size, per kill): the resumed run's next checkpoint removes it. Another
    checkpoint's partial file in the folder (Parle's rank files) is not touched."""
    ckpt_dir = tmp_path / "ckpt"
    fit(checkpoint_dir=ckpt_dir, max_steps=3)
    killed, other = ckpt_dir / ".last.pt.999999999.tmp", ckpt_dir / ".rank1.pt.999999999.tmp"
    killed.write_bytes(b"PK\x03\x04 a save killed here")
    other.write_bytes(b"PK\x03\x04 another file's")
    fit(checkpoint_dir=ckpt_dir, resume=True)
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [other.name, "last.pt"]


def test_a_disk_that_fills_during_the_write_is_named_as_full(tmp_path, monkeypatch):
    """A real full disk accepts the first bytes and then fails the write with ENOSPC, which
    torch's archive writer reports as a RuntimeError ("unexpected pos ..."), not as the
    OSError that /dev/full gives at once. (A small write buffer, so torch's writes reach the
    disk as a real checkpoint's megabytes do.)"""
    import errno
    import io

    import sgdlab.train.checkpoint as checkpoint

    class FillsUp(io.RawIOBase):            # what the OS does once the free space is used
        def __init__(self, f, free):
            self.f, self.free = f, free

        def writable(self):
            return True

        def write(self, b):
            if self.free <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = min(len(b), self.free)
            self.f.write(bytes(b[:n]))
            self.free -= n
            return n

        def fileno(self):
            return self.f.fileno()

    store = RunStore(tmp_path / "runs.sqlite")
    ckpt_dir = tmp_path / "ckpt"
    first = fit(checkpoint_dir=ckpt_dir, max_steps=3, store=store)
    real_open = open
    monkeypatch.setattr(checkpoint, "open", lambda p, mode="r": io.BufferedWriter(
        FillsUp(real_open(p, mode), free=300), buffer_size=16), raising=False)
    with pytest.raises(UserError) as e:
        fit(checkpoint_dir=ckpt_dir, resume=True, store=store, run_id=first.run_id)
    msg = one_line(e)
    assert "cannot write checkpoint" in msg and "no space left on device" in msg, msg
    assert "the previous checkpoint is kept" in msg
    assert not list(ckpt_dir.glob(".*.tmp"))
    assert load_checkpoint(ckpt_dir)["loop"]["step"] == 3
