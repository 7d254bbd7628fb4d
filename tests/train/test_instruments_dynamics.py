"""The dynamics instrument's full-gradient norm with batch norm in eval or train mode (thesis
Fig. 6.3c does not say which; the authors' code takes train mode on batches of 128)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.data.base import Dataset
from sgdlab.testing import Quadratic
from sgdlab.train.callbacks import Schedule
from sgdlab.train.instruments import build_instrument
from sgdlab.train.loop import train
from test_xing_instruments import _bn_model, _no_data
from test_xing_instruments import _data as _xing_data


def _data(n=12):
    return _xing_data(n, scale=2.0, shift=1.0)


def _by_hand(model: nn.Module, data: Dataset, mode: str, batch: int) -> float:
    """‖(1/N) Σ_batches |B| ∇ mean-loss(B)‖ with batch norm's own statistics per batch
    (train) or its running ones (eval); the running statistics left as they were."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    model.train(mode == "train")
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    x, y = data.x_train, data.y_train
    for i in range(0, len(x), batch):
        loss = nn.functional.cross_entropy(model(x[i:i + batch]), y[i:i + batch])
        for t, g in zip(total, torch.autograd.grad(loss, params)):
            t += g * len(x[i:i + batch]) / len(x)
    model.load_state_dict(saved)
    return float(torch.cat([t.flatten() for t in total]).norm())


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_full_gradient_norm_takes_batch_norm_in_the_mode_asked(mode):
    data, model = _data(), _bn_model()
    cb = build_instrument("dynamics", schedule=Schedule.never(), full_grad_every=3,
                          full_grad_bn_mode=mode, eval_batch_size=4)
    r = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
              epochs=1, batch_size=4, callbacks=[cb], progress=False)
    assert r.status == "finished", r.message
    (step, logged), = [(s, v) for s, v in r.history["full_grad_norm"] if s == 3]
    assert logged == pytest.approx(_by_hand(model, data, mode, 4), rel=1e-12)
    other = _by_hand(model, data, "train" if mode == "eval" else "eval", 4)
    assert abs(logged - other) > 1e-3 * logged


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_full_gradient_norm_leaves_the_model_as_training_left_it(mode):
    """The full gradient's train-mode batch norm updates the running statistics of each batch
    it sees: they are the model's own again afterwards, so a run with the measurement ends
    with the buffers, parameters and mode of the same run without it."""
    ends = []
    for callbacks in ([], [build_instrument("dynamics", schedule=Schedule.never(),
                                            full_grad_every=1, full_grad_bn_mode=mode,
                                            eval_batch_size=4)]):
        data, model = _data(), _bn_model()
        r = train(model, nn.CrossEntropyLoss(), data,
                  torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=4,
                  callbacks=callbacks, progress=False)
        assert r.status == "finished", r.message
        ends.append((model.training, model.state_dict()))
    assert ends[0][0] == ends[1][0]
    for k, v in ends[0][1].items():
        assert torch.equal(v, ends[1][1][k]), k


def test_full_gradient_bn_mode_is_checked():
    with pytest.raises(ValueError, match="Invalid full_grad_bn_mode='both'"):
        build_instrument("dynamics", schedule=Schedule.every(1), full_grad_every=1,
                         full_grad_bn_mode="both")
    # the measurements' rule (walk.check_bn_mode), and "both" for the Hessian's norm
    with pytest.raises(ValueError, match=r"^Invalid hessian_bn_mode='batch': expected 'eval', "
                                         r"'train' or 'both'$"):
        build_instrument("dynamics", schedule=Schedule.every(1), hessian_every=1,
                         hessian_bn_mode="batch")


@pytest.mark.parametrize("option", ["eval_subset", "eval_batch_size"])
def test_the_evaluation_counts_are_ints_as_the_other_instruments_counts(option):
    # only < 1 was checked: 2.5 and True were taken, '4' failed on a TypeError
    for bad in (2.5, True, "4", np.bool_(True), 0):
        with pytest.raises(ValueError, match=rf"^Invalid {option}={re.escape(repr(bad))} "
                                             r"\(an int >= 1, or None: "):
            build_instrument("dynamics", schedule=Schedule.every(1), **{option: bad})
    for good in (np.int64(4), torch.tensor(4)):
        cb = build_instrument("dynamics", schedule=Schedule.every(1), **{option: good})
        assert getattr(cb, option) == 4 and type(getattr(cb, option)) is int


@pytest.mark.parametrize("tol", [math.nan, -1e-3, "1e-3", True])
def test_the_hessian_tolerance_is_lanczos_tolerance_named_as_the_instrument_names_it(tol):
    # lanczos' rule (check_tol); its message names hessian_iter, the steps 0 runs
    with pytest.raises(ValueError, match=r"^Invalid hessian_tol=.* \(a finite number >= 0; 0 "
                                         r"runs hessian_iter steps\)$"):
        build_instrument("dynamics", schedule=Schedule.every(1), hessian_every=1,
                         hessian_tol=tol)
    cb = build_instrument("dynamics", schedule=Schedule.every(1), hessian_every=1,
                          hessian_tol=np.float32(0), hessian_iter=2)
    assert cb.hessian_kw == {"tol": 0.0, "num_iter": 2}


def test_the_gradient_cosine_of_float32_gradients_stays_within_minus_one_and_one():
    """GD on L = θ²/2 with lr 1.7: g_{t+1} = −0.7 g_t, so cos(g_t, g_{t+1}) = −1 exactly
    (Xing et al. Fig. 1's bouncing); float32 dot products round it past −1 by ~1e-8, which a
    cosine never is (an arccos of it would be NaN)."""
    data = _no_data()
    model = Quadratic(torch.ones(1, 1), torch.ones(1))
    res = train(model, lambda out, y: out.mean(), data,
                torch.optim.SGD(model.parameters(), lr=1.7), epochs=12, batch_size=2,
                callbacks=[build_instrument("dynamics", schedule=Schedule.every(1))],
                progress=False)
    cos = [v for _, v in res.history["grad_cosine"]]
    assert len(cos) == 11 and all(-1.0 <= v <= 1.0 for v in cos)
    assert cos == pytest.approx([-1.0] * 11, abs=1e-6)


def test_hessian_bn_mode_both_logs_the_norm_in_each_mode():
    # L = ½ θᵀHθ with H = diag(3, −5): no batch norm, so both modes give ‖H‖₂ = 5
    data = _no_data()
    model = Quadratic(torch.diag(torch.tensor([3.0, -5.0], dtype=torch.float64)))
    res = train(model, lambda out, y: out.mean(), data,
                torch.optim.SGD(model.parameters(), lr=0.0), epochs=1, batch_size=2,
                callbacks=[build_instrument("dynamics", schedule=Schedule.every(1),
                                            hessian_every=1, hessian_bn_mode="both")],
                progress=False)
    for mode in ("eval", "train"):
        assert res.history[f"hess_norm_{mode}"] == [(0, pytest.approx(5.0, rel=1e-10)),
                                                     (1, pytest.approx(5.0, rel=1e-10))]
