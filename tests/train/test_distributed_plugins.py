"""The replica processes of ``sgdlab parle --mode distributed`` import ``$SGDLAB_PLUGINS``, as
the launcher does: a config that names a plugin's model trains on every rank."""
from __future__ import annotations

import json
import uuid

import pytest
import torch

from sgdlab.models import MODELS
from sgdlab.plugins import PLUGINS_ENV
from sgdlab.testing import forked_torchrun, user_model_plugin

PLUGIN = user_model_plugin("{name}", inputs=4, outputs=3)


def _two_ranks(tmp_path, model: str, argv: list[str], plugins: tuple[str, ...] = ()
               ) -> list[str]:
    """A one-round run of ``model`` on a toy 4-feature, 3-class data file by 2 forked ranks of
    the entry point (``argv`` after the config; the config's ``plugins``), which must both
    finish; their logs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    torch.save({"x_train": x, "y_train": x[:, :3].argmax(1),
                "meta": {"name": "toy", "task": "classification", "input_shape": (4,),
                         "num_outputs": 3}}, tmp_path / "toy.pt")
    cfg = {"data": {"file": str(tmp_path / "toy.pt")}, "model": {"name": model},
           "parle": {"replicas": 2, "L": 2, "lr": 0.1, "batch_size": 8, "seed": 2},
           "rounds": 1, "seed": 1, **({"plugins": list(plugins)} if plugins else {})}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    logs = [str(tmp_path / f"rank{r}.log") for r in range(2)]
    procs, store = forked_torchrun(2, [str(tmp_path / "cfg.json"), *argv, "--timeout", "30"],
                                   logs)
    for p in procs:
        p.join(120)
        if p.is_alive():
            p.kill()
            pytest.fail("a rank did not finish in 120 s")
    out = [open(log).read() for log in logs]
    assert [p.exitcode for p in procs] == [0, 0], [o[-2000:] for o in out]
    assert "parle (distributed, 2 processes, 1 rounds" in out[0], out[0]
    del store
    return out


def test_every_rank_imports_the_launchers_plugins(tmp_path, tmp_store, monkeypatch):
    model = f"dist-user-linear-{uuid.uuid4().hex[:8]}"
    (tmp_path / "dist_user_models.py").write_text(PLUGIN.replace("{name}", model))
    monkeypatch.setenv(PLUGINS_ENV, str(tmp_path / "dist_user_models.py"))
    assert model not in MODELS          # the forked ranks get it from the variable only
    _two_ranks(tmp_path, model, [])


def test_a_plugin_given_stands_in_on_every_rank_for_a_recorded_file_that_is_gone(
        tmp_path, tmp_store, monkeypatch):
    """A config recording a plugin file moved since trains with `--plugin NEWPATH`, as
    `sgdlab train --plugin` takes it: the launcher took it, each rank refused the recorded
    path (no such file), only $SGDLAB_PLUGINS stood in for it there."""
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    tag = uuid.uuid4().hex[:8]
    model, stem = f"dist-moved-linear-{tag}", f"dist_moved_models_{tag}"
    (tmp_path / "new").mkdir()
    moved = tmp_path / "new" / f"{stem}.py"
    moved.write_text(PLUGIN.replace("{name}", model))
    out = _two_ranks(tmp_path, model, ["--plugin", str(moved)],
                     plugins=(str(tmp_path / f"{stem}.py"),))     # where it was: gone
    for o in out:
        assert f"recorded by the run is gone; using {moved.resolve()}" in o, o
