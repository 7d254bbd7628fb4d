"""Unusable checkpoints and failed checkpoint writes: one clear error naming the file, nothing
already written lost."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.data import Dataset
from sgdlab.errors import UserError
from sgdlab.optim import build_optimizer_for, build_schedule
from sgdlab.optim.protocols import RandomLR
from sgdlab.store import RunStore
from sgdlab.train import load_checkpoint, save_checkpoint, train

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


def test_a_file_sgdlab_did_not_write_is_named_by_what_it_holds_and_where_it_goes(tmp_path):
    # "is not an sgdlab checkpoint (format None)" said neither what the file is nor what to do
    net = nn.Linear(3, 2)
    torch.save(net.state_dict(), tmp_path / "mine.pt")
    torch.save({"epoch": 3, "model_state_dict": net.state_dict()}, tmp_path / "script.pt")
    torch.save({"format": 99}, tmp_path / "future.pt")
    for name, what in (("mine.pt", "a bare state dict of 2 tensors, not written by `sgdlab "
                                   "train`: the command line reads the checkpoints of `sgdlab "
                                   "train`"),
                       ("script.pt", "a dict of epoch, model_state_dict, not written by"),
                       ("future.pt", "format 99, this version reads 1")):
        with pytest.raises(UserError) as e:
            load_checkpoint(tmp_path / name)
        assert f"{name}' is not an sgdlab checkpoint ({what}" in one_line(e), one_line(e)
        assert ("sgdlab.measure's functions" in one_line(e)) == (name != "future.pt")


def test_load_weights_reads_every_file_a_run_leaves_its_weights_in(tmp_path):
    """A loop's checkpoint, a finished run's final weights and a bare state dict (a parle
    master, a sweep run's model.pt: its step given) give the same model and their step; a
    file that holds none, or is missing or damaged, is one line naming it."""
    from sgdlab.train.checkpoint import WEIGHTS_NAME, load_weights, save_weights

    run = fit(checkpoint_dir=tmp_path / "ckpt", max_steps=3)
    model = load_checkpoint(run.checkpoint)["model"]
    torch.save(model, tmp_path / "bare.pt")
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    net.load_state_dict(model)
    save_weights(tmp_path / WEIGHTS_NAME, net, step=3)
    for path, step in ((run.checkpoint, None), (tmp_path / WEIGHTS_NAME, None),
                       (tmp_path / "bare.pt", 3)):
        state = load_weights(path, step)
        assert state["loop"]["step"] == 3, path
        assert state["model"].keys() == model.keys(), path
        assert all(torch.equal(state["model"][k], v) for k, v in model.items()), path
    torch.save({"weights": [1.0]}, tmp_path / "list.pt")
    blob = bytearray((tmp_path / "bare.pt").read_bytes())
    blob[blob.find(model["0.weight"].numpy().tobytes()) + 5] ^= 0x01
    (tmp_path / "flipped.pt").write_bytes(bytes(blob))
    for name, step, needle in (("list.pt", 0, "holds no state dict (a name -> tensor mapping)"),
                               ("gone.pt", 0, "no weights file at"),
                               ("flipped.pt", 0, "cannot read weights file"),
                               ("bare.pt", None, "is not an sgdlab checkpoint")):
        with pytest.raises(UserError) as e:
            load_weights(tmp_path / name, step)
        assert needle in one_line(e) and str(tmp_path / name) in str(e.value), name


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
    assert "last.pt' does not fit this model" in msg
    assert "mis-shaped: 0.weight (checkpoint [4, 3], model [5, 3])" in msg, msg


def test_a_checkpoint_of_another_architecture_names_its_first_entries_not_all_of_them():
    # torch's message listed every missing and unexpected name (hundreds of a ResNet's)
    from sgdlab.train.checkpoint import load_state

    deep = nn.Sequential(*[nn.Linear(2, 2) for _ in range(50)])
    with pytest.raises(UserError) as e:
        load_state(deep, nn.Sequential(nn.Conv2d(1, 2, 3)).state_dict(), "other.pt")
    assert ("checkpoint 'other.pt' does not fit this model (missing: 1.weight, 1.bias, 2.weight "
            "(and 95 more); mis-shaped: 0.weight (checkpoint [2, 1, 3, 3], model [2, 2])); was "
            "it written with another config?") == one_line(e)


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


def fit_with(optimizer=lambda p: torch.optim.SGD(p, lr=0.1), schedule=None,
             loss=nn.CrossEntropyLoss(), dtype=torch.float64, torch_seed=0, **kw):
    """``fit`` in float64 with the optimizer ``optimizer(params)`` (or ``named(...)``), the
    schedule ``schedule(optimizer)`` and ``loss``, torch seeded with ``torch_seed`` before
    anything is built; returns (model, optimizer, result)."""
    torch.manual_seed(torch_seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(dtype)
    ds = data().to(dtype=dtype)
    opt = (build_optimizer_for(optimizer[0], model, loss_fn=loss, data=ds.train, **optimizer[1])
           if isinstance(optimizer, tuple) else optimizer(model.parameters()))
    kw = {"epochs": 2, "batch_size": 8, **kw}
    res = train(model, loss, ds, opt, progress=False,
                schedule=None if schedule is None else schedule(opt), **kw)
    return model, opt, res


def named(name: str, **hyper) -> tuple[str, dict]:
    """The registry's optimizer ``name`` for ``fit_with`` (built over the model: GLD's
    statistics and the trivialized field read it)."""
    return name, hyper


def refusal(tmp_path, **change) -> str:
    """The one-line error of resuming ``tmp_path``'s checkpoint with ``change``."""
    with pytest.raises(UserError) as e:
        fit_with(checkpoint_dir=tmp_path, resume=True, **change)
    msg = one_line(e)
    assert "cannot resume from" in msg and "last.pt" in msg, msg
    return msg


def test_resume_with_other_optimizer_settings_is_refused_naming_each_difference(tmp_path):
    """The optimizer's load_state_dict puts the checkpoint's parameter groups back: a new lr,
    momentum or weight decay was ignored without a word (the run went on with the old ones).
    Tuples (Adam's betas) and tensor rates compare by value."""
    fit_with(checkpoint_dir=tmp_path / "sgd", max_steps=3)
    msg = refusal(tmp_path / "sgd", optimizer=lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, weight_decay=1e-3))
    assert "lr (0.1 -> 0.05), momentum (0 -> 0.9), weight_decay (0 -> 0.001)" in msg, msg

    def adam(lr=torch.tensor(0.01, dtype=torch.float64), betas=(0.9, 0.999)):
        return lambda p: torch.optim.Adam(p, lr=lr, betas=betas)

    fit_with(optimizer=adam(), checkpoint_dir=tmp_path / "adam", max_steps=3)
    assert "betas ([0.9, 0.999] -> [0.5, 0.999])" in refusal(
        tmp_path / "adam", optimizer=adam(betas=(0.5, 0.999)))
    assert "lr (0.01 -> 0.02)" in refusal(
        tmp_path / "adam", optimizer=adam(lr=torch.tensor(0.02, dtype=torch.float64)))
    assert fit_with(optimizer=adam(), checkpoint_dir=tmp_path / "adam", resume=True
                    )[2].steps == 8

    def two_groups(lr1):
        return lambda p: torch.optim.SGD([{"params": list(p)[:2]},
                                          {"params": list(p)[2:], "lr": lr1}], lr=0.1)

    fit_with(optimizer=two_groups(0.2), checkpoint_dir=tmp_path / "groups", max_steps=3)
    assert "lr of parameter group 1 (0.2 -> 0.3)" in refusal(
        tmp_path / "groups", optimizer=two_groups(0.3))


def test_resume_with_another_schedule_is_refused(tmp_path):
    """A torch scheduler's load_state_dict puts its own settings back too (a new StepLR gamma
    was ignored); a schedule left out kept the checkpoint's lr for the rest of the run."""
    def step_lr(gamma):
        return lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=gamma)

    fit_with(schedule=step_lr(0.5), checkpoint_dir=tmp_path, max_steps=3)
    assert "gamma of the schedule (0.5 -> 0.9)" in refusal(tmp_path, schedule=step_lr(0.9))
    assert "the schedule (StepLR -> None)" in refusal(tmp_path)
    assert "initial_lr (0.1 -> 0.2)" in refusal(            # lr as built is the schedule's
        tmp_path, schedule=step_lr(0.5), optimizer=lambda p: torch.optim.SGD(p, lr=0.2))

    def sequential(gamma):
        return lambda opt: torch.optim.lr_scheduler.SequentialLR(opt, [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=2),
            step_lr(gamma)(opt)], milestones=[2])

    fit_with(schedule=sequential(0.5), checkpoint_dir=tmp_path / "seq", max_steps=3)
    assert "_schedulers.1.gamma of the schedule (0.5 -> 0.9)" in refusal(
        tmp_path / "seq", schedule=sequential(0.9))
    # sgdlab's schedules keep their settings as attributes; RandomLR's width was restored
    from sgdlab.optim.protocols import RandomLR

    def random_lr(width):
        return lambda opt: RandomLR(opt, width=width)

    fit_with(schedule=random_lr(0.5), checkpoint_dir=tmp_path / "random", max_steps=3)
    msg = refusal(tmp_path / "random", schedule=random_lr(0.9))
    assert "width of the schedule (0.5 -> 0.9)" in msg
    assert "lr (" not in msg       # the rate drawn at construction is no setting
    assert fit_with(schedule=random_lr(0.5), checkpoint_dir=tmp_path / "random",
                    resume=True)[2].steps == 8


def test_a_resume_with_the_same_settings_is_bit_for_bit_after_the_schedule_moved_lr(
        tmp_path):
    """The groups are compared as built, not as the schedule left them: a LinearLR changes
    lr at construction and a StepLR moved it before the checkpoint; the resume is accepted
    and ends where the uninterrupted run ends. A checkpoint written before the settings were
    recorded resumes too."""
    def schedule(opt):
        return torch.optim.lr_scheduler.SequentialLR(opt, [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=2),
            torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)], milestones=[2])

    def sgd(p):
        return torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4)

    ref_model, ref_opt, _ = fit_with(sgd, schedule, epochs=3)
    fit_with(sgd, schedule, epochs=3, checkpoint_dir=tmp_path / "a", max_steps=7)
    saved = load_checkpoint(tmp_path / "a")
    assert saved["optimizer"]["param_groups"][0]["lr"] != 0.1     # moved before the save
    model, opt, res = fit_with(sgd, schedule, epochs=3, checkpoint_dir=tmp_path / "a",
                               resume=True)
    assert res.steps == 12
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)
    assert opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]

    fit_with(sgd, schedule, epochs=3, checkpoint_dir=tmp_path / "old", max_steps=7)
    old = load_checkpoint(tmp_path / "old")
    old.pop("settings", None)                  # as written before the settings were recorded
    save_checkpoint(tmp_path / "old" / "last.pt", old)
    model, _, _ = fit_with(sgd, schedule, epochs=3, checkpoint_dir=tmp_path / "old",
                           resume=True)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name, hyper", [
    ("random-lr-sgd", dict(lr=0.1)), ("entropy_sgd", dict(L=2, noise=1e-3)),
    ("heat", dict(L=2)), ("gld-const", dict(sigma=0.1)), ("trivialized", dict(lr=0.1, p=3))])
def test_resume_with_another_seed_of_the_optimizers_generator_is_refused(tmp_path, name,
                                                                         hyper):
    """The optimizer's load_state_dict restores its generator: a new seed was ignored without
    a word (the resumed run drew the saved run's noise). Refused, as the sampling seed is."""
    fit_with(named(name, seed=1, **hyper), checkpoint_dir=tmp_path, max_steps=3)
    assert "seed of the optimizer (1 -> 7)" in refusal(
        tmp_path, optimizer=named(name, seed=7, **hyper))


@pytest.mark.parametrize("name, hyper", [
    ("random-lr-sgd", dict(lr=0.1)), ("entropy_sgd", dict(L=2, noise=1e-3)),
    ("heat", dict(L=2)), ("gld-const", dict(sigma=0.1)), ("trivialized", dict(lr=0.1, p=3))])
def test_a_default_seed_is_compared_as_given_not_as_drawn(tmp_path, name, hyper):
    """A script that resumes without seeding torch as its first run did builds the optimizer
    with another default seed (torch's initial seed, or a draw of its generator); the
    checkpoint restores the generator, so the resumed run is the uninterrupted one and must
    not be refused for it. A seed given on one side only is a change."""
    ref, _, _ = fit_with(named(name, **hyper), max_steps=6)
    fit_with(named(name, **hyper), checkpoint_dir=tmp_path, max_steps=3)
    model, _, _ = fit_with(named(name, **hyper), checkpoint_dir=tmp_path, resume=True,
                           max_steps=6, torch_seed=123)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    assert "seed of the optimizer (None -> 7)" in refusal(
        tmp_path, optimizer=named(name, seed=7, **hyper))


SWITCH = dict(first="sgd", second="sgd", switch_step=5, first_hyper={"lr": 0.1},
              second_hyper={"lr": 0.05})


@pytest.mark.parametrize("name, hyper, change, needle", [
    ("gld-const", dict(sigma=0.1, refresh_every=5), dict(sigma=0.2),
     "sigma of the optimizer (0.1 -> 0.2)"),
    ("gld-leading", dict(k=1, noise_batch_size=8), dict(k=2), "k of the optimizer (1 -> 2)"),
    ("trivialized", dict(lr=0.1, p=3, tau0=100.0), dict(p=4, tau0=10.0),
     "p of the optimizer (3.0 -> 4.0), tau0 of the optimizer (100.0 -> 10.0)"),
    ("switch", SWITCH, dict(switch_step=4), "switch_step of the optimizer (5 -> 4)"),
    ("switch", SWITCH, dict(second_hyper={"lr": 0.01}),
     "second.lr of the optimizer (0.05 -> 0.01)"),
    ("switch", {**SWITCH, "second": "random-lr-sgd", "second_hyper": {"lr": 0.05, "seed": 1}},
     dict(second_hyper={"lr": 0.05, "seed": 7}), "second.seed of the optimizer (1 -> 7)")])
def test_resume_with_another_optimizer_setting_kept_outside_its_groups_is_refused(
        tmp_path, name, hyper, change, needle):
    """Settings an optimizer keeps as attributes were compared nowhere: GLD's and the
    trivialized field's took effect from the resumed step on (a run of neither setting),
    and a SwitchOptimizer's load_state_dict put the saved switch_step and second optimizer's
    groups back (the new ones ignored)."""
    fit_with(named(name, **hyper), checkpoint_dir=tmp_path, max_steps=3)
    assert needle in refusal(tmp_path, optimizer=named(name, **{**hyper, **change}))


def test_resume_with_another_optimizer_class_is_refused(tmp_path):
    """An Adam given SGD's checkpoint took SGD's groups and failed at its first step with
    KeyError 'betas'; an AnnealedNoiseSGD resumed a TrivializedSGD's run and redrew its
    field every step."""
    fit_with(checkpoint_dir=tmp_path / "sgd", max_steps=3)
    assert "the optimizer (SGD -> Adam)" in refusal(
        tmp_path / "sgd", optimizer=lambda p: torch.optim.Adam(p, lr=0.1))
    fit_with(named("trivialized", lr=0.1, p=3), checkpoint_dir=tmp_path / "t", max_steps=3)
    assert "the optimizer (TrivializedSGD -> AnnealedNoiseSGD)" in refusal(
        tmp_path / "t", optimizer=named("annealed-noise", lr=0.1, p=3))


def test_resume_with_another_seed_or_scope_of_the_schedule_is_refused(tmp_path):
    """The schedule's load_state_dict restores RandomLR's generator and a scoping schedule's
    scope: a new seed or decay rate was ignored without a word."""
    def random_lr(seed):
        return lambda opt: RandomLR(opt, width=0.5, seed=seed)

    fit_with(schedule=random_lr(1), checkpoint_dir=tmp_path / "random", max_steps=3)
    assert "seed of the schedule (1 -> 7)" in refusal(tmp_path / "random",
                                                      schedule=random_lr(7))

    def scoping(rate):
        return lambda opt: build_schedule("scoping", opt, steps_per_epoch=4, total_steps=8,
                                          key="gamma", kind="exponential", initial=1.0,
                                          rate=rate)

    entropy = named("entropy_sgd", L=2, gamma=1.0, seed=1)
    fit_with(entropy, scoping(0.1), checkpoint_dir=tmp_path / "scope", max_steps=3)
    assert "scope.rate of the schedule (0.1 -> 0.5)" in refusal(
        tmp_path / "scope", optimizer=entropy, schedule=scoping(0.5))
    ref = fit_with(entropy, scoping(0.1))[0]
    model = fit_with(entropy, scoping(0.1), checkpoint_dir=tmp_path / "scope", resume=True)[0]
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


def test_resume_on_another_horizon_of_a_schedule_built_for_it_is_refused(tmp_path):
    """A trapezoid without ``anneal`` decays over the steps the run takes (epochs' steps
    capped by max_steps, as a sweep's train procedure builds it): a run saved on a horizon of
    12 steps resumed with epochs for 16 would go on under another decay. Warm-up and hold
    take 4 steps each (1 epoch of 32 / 8), so the anneal is 12 − 8 = 4 steps, then 16 − 8 = 8:
    refused by name. On the same horizon it resumes to the uninterrupted run."""
    def trapezoid(total):
        return lambda opt: build_schedule("trapezoid", opt, steps_per_epoch=4,
                                          total_steps=total, warmup=1, hold=1)

    fit_with(schedule=trapezoid(12), checkpoint_dir=tmp_path, epochs=3, max_steps=5)
    assert "anneal_steps of the schedule (4 -> 8)" in refusal(
        tmp_path, schedule=trapezoid(16), epochs=4)
    ref = fit_with(schedule=trapezoid(12), epochs=3)[0]
    model = fit_with(schedule=trapezoid(12), checkpoint_dir=tmp_path, epochs=3, resume=True)[0]
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


def test_a_run_with_numpy_numbers_in_its_settings_resumes_bit_for_bit(tmp_path):
    """An lr taken from np.logspace (in the optimizer's groups) or a GLD sigma given as a
    numpy float (in the run's settings) was saved as a numpy object, which
    torch.load(weights_only=True) refuses: no resume could read the run's checkpoints. They
    are saved as the Python numbers they hold."""
    lr = np.logspace(-2, -1, 3)[1]

    def sgd(p):
        return torch.optim.SGD(p, lr=lr, momentum=0.9)

    reference = fit_with(sgd)[0]
    fit_with(sgd, checkpoint_dir=tmp_path / "sgd", max_steps=3)
    model = fit_with(sgd, checkpoint_dir=tmp_path / "sgd", resume=True)[0]
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    gld = named("gld-const", lr=0.1, sigma=np.float64(0.1), seed=1)
    fit_with(gld, checkpoint_dir=tmp_path / "gld", max_steps=3)
    assert fit_with(gld, checkpoint_dir=tmp_path / "gld", resume=True)[2].steps == 8


def test_resume_with_another_loss_dtype_or_evaluation_subset_is_refused(tmp_path):
    """Another torch loss trained another objective, float32 parameters took the float64
    checkpoint by casting, and another eval_subset logged the resumed evaluations on other
    examples, all without a word. eval_every and a loss given as a plain function (a wrapper
    of the same loss) may change."""
    fit_with(checkpoint_dir=tmp_path, max_steps=3, eval_subset=10)
    assert "eval_subset (10 -> 20)" in refusal(tmp_path, eval_subset=20)
    assert "eval_subset (10 -> None)" in refusal(tmp_path)
    assert "loss ('CrossEntropyLoss' -> 'MSELoss')" in refusal(
        tmp_path, eval_subset=10, loss=nn.MSELoss())
    assert "dtype ('float64' -> 'float32')" in refusal(tmp_path, eval_subset=10,
                                                       dtype=torch.float32)
    ce = nn.CrossEntropyLoss()
    res = fit_with(checkpoint_dir=tmp_path, resume=True, eval_subset=10, eval_every=2,
                   loss=lambda out, y: ce(out, y))[2]
    assert res.steps == 8


def test_a_run_of_torch_s_cross_entropy_resumes_with_the_registry_s_per_position_one(tmp_path):
    """``loss: cross_entropy`` on token data was ``nn.CrossEntropyLoss`` and is now
    SequenceCrossEntropyLoss, which computes it: a run checkpointed before resumes to the
    uninterrupted run."""
    from sgdlab.train.losses import SequenceCrossEntropyLoss

    whole = fit_with()
    fit_with(checkpoint_dir=tmp_path, max_steps=3)
    model, _, res = fit_with(checkpoint_dir=tmp_path, resume=True,
                             loss=SequenceCrossEntropyLoss())
    assert res.steps == 8 and res.final == whole[2].final
    for p, q in zip(model.parameters(), whole[0].parameters()):
        assert torch.equal(p, q)


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


def _instrumented(order, ckpt, extra=(), **kw):
    """``fit`` with a dynamics and a step-interpolation instrument (both keep state in the
    checkpoint) in ``order``, then the ``extra`` callbacks; the instruments by name."""
    from sgdlab.train.callbacks import Schedule
    from sgdlab.train.instruments import build_instrument

    cbs = {"dynamics": build_instrument("dynamics", schedule=Schedule.every(1)),
           "walk": build_instrument("step_interpolation", schedule=Schedule.every(1),
                                    eval_subset=8)}
    res = fit(callbacks=[cbs[k] for k in order] + list(extra), checkpoint_dir=ckpt,
              checkpoint_every=5, **kw)
    return res, cbs


def test_resume_hands_callback_states_back_by_instrument_not_by_position(tmp_path):
    """Reordered instruments: by position the dynamics instrument took the interpolation's
    state (θ_0 lost: distances from the resumed model) and the interpolation the dynamics'
    (its records of the first steps lost)."""
    whole, whole_cbs = _instrumented(["dynamics", "walk"], tmp_path / "whole")
    _instrumented(["dynamics", "walk"], tmp_path / "cut", max_steps=5)
    res, cbs = _instrumented(["walk", "dynamics"], tmp_path / "cut", resume=True)
    assert res.history["dist_from_init"] == whole.history["dist_from_init"]
    assert len(cbs["walk"].records) == len(whole_cbs["walk"].records) == 8


def test_resume_refuses_a_saved_state_no_instrument_takes(tmp_path):
    _instrumented(["dynamics", "walk"], tmp_path, max_steps=5)
    with pytest.raises(UserError) as e:
        _instrumented(["walk"], tmp_path, resume=True)
    assert "dynamics#0" in one_line(e) and "step_interpolation#0" in str(e.value)
    # an instrument added at the resume (a second of a kind) starts afresh
    from sgdlab.train.callbacks import Schedule
    from sgdlab.train.instruments import build_instrument

    added = build_instrument("step_interpolation", schedule=Schedule.every(1), eval_subset=8)
    res, cbs = _instrumented(["dynamics", "walk"], tmp_path, extra=[added], resume=True)
    assert res.status == "finished"
    assert len(cbs["walk"].records) == 8 and len(added.records) == 3   # steps 5, 6, 7


def test_a_checkpoint_with_states_by_position_still_resumes(tmp_path):
    """Checkpoints written before the keys hold a list: handed back by position, as then."""
    whole, _ = _instrumented(["dynamics", "walk"], tmp_path / "whole")
    cut, _ = _instrumented(["dynamics", "walk"], tmp_path / "cut", max_steps=5)
    state = load_checkpoint(cut.checkpoint)
    state["callbacks"] = list(state["callbacks"].values())
    save_checkpoint(cut.checkpoint, state)
    res, cbs = _instrumented(["dynamics", "walk"], tmp_path / "cut", resume=True)
    assert res.history["dist_from_init"] == whole.history["dist_from_init"]
    assert len(cbs["walk"].records) == 8


def test_a_dynamics_instrument_added_at_resume_logs_no_distance_from_a_resumed_origin(tmp_path):
    """Added at the resume, the instrument had no θ_0: it measured ‖θ_s − θ_5‖ as
    ``dist_from_init``. It now logs the other quantities only (and says so), also after a
    second resume from its own checkpointed state."""
    whole, _ = _instrumented(["dynamics"], tmp_path / "whole")
    _instrumented(["walk"], tmp_path / "cut", max_steps=5)
    with pytest.warns(UserWarning, match="no dist_from_init"):
        res, _ = _instrumented(["walk", "dynamics"], tmp_path / "cut", max_steps=7,
                               resume=True)
    assert "dist_from_init" not in res.history
    assert [s for s, _ in res.history["param_norm"]] == [6, 7]
    assert res.history["param_norm"] == whole.history["param_norm"][6:8]
    res, _ = _instrumented(["walk", "dynamics"], tmp_path / "cut", resume=True)
    assert "dist_from_init" not in res.history
    assert res.history["param_norm"] == whole.history["param_norm"][6:]


def test_a_text_file_is_named_not_a_checkpoint_not_a_key_error(tmp_path):
    """torch's unpickler read a text file's first byte as an opcode and the message was
    `KeyError: 105`; now it says the file is no checkpoint."""
    from sgdlab.train.checkpoint import load_checkpoint

    path = tmp_path / "notes.pt"
    path.write_text("hi\n")
    with pytest.raises(UserError, match=r"cannot read checkpoint .*notes\.pt': not a checkpoint "
                                        r"file \(neither a torch archive nor a pickle"):
        load_checkpoint(path)


def test_rng_state_round_trip_restores_every_generator(tmp_path):
    """torch's, numpy's, Python's global generators and the sampler: the draws after a
    restore from a saved and reloaded checkpoint repeat the draws after the save."""
    import random

    from sgdlab.train.checkpoint import rng_state, set_rng_state

    gen = torch.Generator().manual_seed(4)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn(), random.gauss(0, 1)          # a cached second normal in each

    def draws():
        return (torch.rand(3).tolist(), np.random.randn(3).tolist(),
                [random.gauss(0, 1) for _ in range(3)], torch.rand(3, generator=gen).tolist())

    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state(gen)})
    want = draws()
    draws()
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"], gen)
    assert draws() == want


def test_load_checkpoint_reads_a_folder_s_last_pt_and_refuses_another_format(tmp_path):
    save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.ones(2)}})
    assert torch.equal(load_checkpoint(tmp_path)["model"]["w"], torch.ones(2))
    torch.save({"format": 2, "model": {}}, tmp_path / "v2.pt")
    with pytest.raises(UserError, match="not an sgdlab checkpoint"):
        load_checkpoint(tmp_path / "v2.pt")
    save_checkpoint(tmp_path / "none.pt", {"model": None, "loop": {}})
    with pytest.raises(UserError, match="has no 'model' entry"):
        load_checkpoint(tmp_path / "none.pt", require=("model",))
