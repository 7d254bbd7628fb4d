"""The thesis' LSTMs (§3.3.1 (iii), §3.3.4, §3.3.5): parameter counts, the hand-written cells
against ``nn.LSTM`` in float64, and the lab on (N, T) tokens with (N, V, T) outputs: training
from a run config (SGD, Entropy-SGD, Entropy-Adam), resuming, curvature and per-sample
gradients."""
from __future__ import annotations

import copy
import math
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sgdlab.accuracy import argmax_hits
from sgdlab.data.base import Dataset
from sgdlab.data.registry import DATASETS, register_dataset
from sgdlab.errors import UserError
from sgdlab.measure import dense_hessian, hessian_top_eigenvalue
from sgdlab.models import build_model, count_parameters, describe
from sgdlab.models.recurrent import ZAREMBA_LARGE, ZAREMBA_MEDIUM, LSTMStack
from sgdlab.operators.per_sample import per_sample_gradients

from model_counts import dense  # tests/models is on sys.path

pytestmark = pytest.mark.usefixtures("one_thread")


def lstm(i: int, h: int, biases: int = 2) -> int:
    """One LSTM layer: four gates, each with input and recurrent weights and its bias(es)."""
    return 4 * (i * h + h * h + biases * h)


def tokens(n: int, t: int, vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of a random token stream: x the window, y the same shifted by one token."""
    g = torch.Generator().manual_seed(seed)
    stream = torch.randint(0, vocab, (n, t + 1), generator=g)
    return stream[:, :-1].contiguous(), stream[:, 1:].contiguous()


# --- parameter counts -------------------------------------------------------------------------
def test_char_lstm_autograd_is_the_stated_32640():  # §3.3.1 (iii)
    info = describe("char-lstm-autograd")
    n = count_parameters(build_model("char-lstm-autograd", info.reference_input, 96))
    assert info.stated_params == 32_640 and info.reference_outputs == 96
    # one bias per gate, a learnt initial hidden state and cell, the 48 -> 96 output layer
    assert n == lstm(96, 48, biases=1) + 48 + 48 + dense(48, 96) == 32_640
    assert n == 4 * (96 + 48 + 1) * 48 + 49 * 96 + 96


def test_ptb_lstm_is_about_66_million():  # §3.3.4 "about 66 million weights"
    info = describe("ptb-lstm")
    n = count_parameters(build_model("ptb-lstm", (35,), 10_000))
    # embedding 10,000 x 1500, two layers of 1500 (two biases, Zaremba et al.), 1500 -> 10,000
    assert n == 10_000 * 1500 + lstm(1500, 1500) * 2 + dense(1500, 10_000) == 66_034_000
    assert info.stated_params == 66_000_000 and round(n / 1e6) * 1e6 == 66_000_000
    assert ZAREMBA_LARGE.items() <= info.options.items()      # the default is the large model
    medium = count_parameters(build_model("ptb-lstm", (35,), 10_000, **ZAREMBA_MEDIUM))
    assert medium == 10_000 * 650 + 2 * lstm(650, 650) + dense(650, 10_000) == 19_780_400


def test_char_lstm_count_and_options():  # §3.3.5, no count stated
    n = count_parameters(build_model("char-lstm", (50,), 87))
    assert n == lstm(87, 128) + lstm(128, 128) + dense(128, 87) == 254_423
    assert describe("char-lstm").stated_params is None
    assert describe("char-lstm").options["dropout"] == 0.0
    assert count_parameters(build_model("char-lstm", (50,), 87, layers=3, hidden=16)) == \
        lstm(87, 16) + 2 * lstm(16, 16) + dense(16, 87)


def test_both_implementations_have_the_same_parameters_and_outputs():
    for name in ("char-lstm", "ptb-lstm"):
        torch.manual_seed(0)
        cells = build_model(name, (7,), 11, hidden=12, layers=2, impl="cells").double().eval()
        torch.manual_seed(1)
        fused = build_model(name, (7,), 11, hidden=12, layers=2).double().eval()
        assert isinstance(fused.lstm, nn.LSTM) and not isinstance(cells.lstm, nn.LSTM)
        assert {k: v.shape for k, v in cells.state_dict().items()} == \
            {k: v.shape for k, v in fused.state_dict().items()}
        fused.load_state_dict(cells.state_dict())
        x, _ = tokens(3, 7, 11)
        torch.testing.assert_close(cells(x), fused(x), rtol=0, atol=1e-12)


def test_char_lstm_initialisation_is_char_rnns():
    torch.manual_seed(0)
    net = build_model("char-lstm", (50,), 87)
    for k in range(2):
        w = getattr(net.lstm, f"weight_hh_l{k}")
        assert 0.07 < w.abs().max() <= 0.08
        b = getattr(net.lstm, f"bias_ih_l{k}")
        assert torch.equal(b[128:256], torch.ones(128))       # forget gates (order i, f, g, o)
        assert b[:128].abs().max() <= 0.08
    ptb = build_model("ptb-lstm", (35,), 50, hidden=20)
    assert max(p.abs().max() for p in ptb.parameters()) <= 0.04


# --- the hand-written cells against nn.LSTM, float64 ---------------------------------------
def test_one_bias_cells_equal_nn_lstm_outputs_and_gradients_in_float64():
    torch.manual_seed(0)
    mine = LSTMStack(5, 4, 2, two_biases=False).double()
    ref = nn.LSTM(5, 4, 2, batch_first=True).double()
    with torch.no_grad():
        for k in range(2):
            for w in ("weight_ih", "weight_hh"):
                getattr(mine, f"{w}_l{k}").copy_(getattr(ref, f"{w}_l{k}"))
            # one bias per gate = the sum of torch's two
            getattr(mine, f"bias_l{k}").copy_(getattr(ref, f"bias_ih_l{k}")
                                              + getattr(ref, f"bias_hh_l{k}"))
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    target = torch.randn(3, 6, 4, dtype=torch.float64)
    out_mine, (out_ref, _) = mine(x), ref(x)
    torch.testing.assert_close(out_mine, out_ref, rtol=0, atol=1e-12)
    g_mine = torch.autograd.grad(((out_mine - target) ** 2).sum(), list(mine.parameters()))
    g_ref = dict(zip([n for n, _ in ref.named_parameters()],
                     torch.autograd.grad(((out_ref - target) ** 2).sum(), list(ref.parameters()))))
    for k in range(2):
        names = [f"weight_ih_l{k}", f"weight_hh_l{k}"]
        for n in names:
            torch.testing.assert_close(g_mine[list(dict(mine.named_parameters())).index(n)],
                                       g_ref[n], rtol=0, atol=1e-12)
        gb = g_mine[list(dict(mine.named_parameters())).index(f"bias_l{k}")]
        torch.testing.assert_close(gb, g_ref[f"bias_ih_l{k}"], rtol=0, atol=1e-12)
        torch.testing.assert_close(gb, g_ref[f"bias_hh_l{k}"], rtol=0, atol=1e-12)


def test_autograd_lstm_gradient_equals_finite_differences():
    torch.manual_seed(0)
    net = build_model("char-lstm-autograd", (5,), 6, hidden=3, init_scale=0.5).double()
    x, y = tokens(2, 5, 6)
    params = list(net.parameters())
    grads = torch.autograd.grad(F.cross_entropy(net(x), y), params)
    eps = 1e-6
    with torch.no_grad():
        for p, g in zip(params, grads):
            for j in range(0, p.numel(), 7):
                flat = p.view(-1)
                old = flat[j].item()
                flat[j] = old + eps
                up = F.cross_entropy(net(x), y).item()
                flat[j] = old - eps
                down = F.cross_entropy(net(x), y).item()
                flat[j] = old
                assert abs((up - down) / (2 * eps) - g.reshape(-1)[j].item()) < 1e-8


def test_outputs_are_n_v_t_and_read_per_token():
    net = build_model("char-lstm-autograd", (8,), 10, hidden=6)
    x, y = tokens(4, 8, 10)
    out = net(x)
    assert out.shape == (4, 10, 8)
    # position t scores the token after x[:, t]: it depends on x[:, :t + 1] only
    x2 = x.clone()
    x2[:, 5] = (x2[:, 5] + 1) % 10
    out2 = net(x2)
    assert torch.equal(out[..., :5], out2[..., :5]) and not torch.equal(out[..., 5], out2[..., 5])
    hits, labels = argmax_hits(out, y)
    assert labels == 32 and hits == (out.argmax(1) == y).sum()
    loss = F.cross_entropy(out, y)
    torch.testing.assert_close(loss, F.cross_entropy(out.transpose(1, 2).reshape(-1, 10),
                                                     y.reshape(-1)))


def test_bad_inputs_are_named():
    with pytest.raises(UserError, match=r"input_shape must be \(T,\)"):
        build_model("char-lstm", (1, 28, 28), 10)
    with pytest.raises(UserError, match="integer tokens"):
        build_model("char-lstm", (8,), 10)(torch.randn(2, 8))
    with pytest.raises(UserError, match="impl"):
        build_model("ptb-lstm", (8,), 10, hidden=4, impl="cudnn")
    with pytest.raises(UserError, match="init_scale"):
        build_model("ptb-lstm", (8,), 10, hidden=4, init_scale=0)
    # inf drew every weight from U(-inf, inf); numpy's float (a grid's value) was refused
    for name in ("ptb-lstm", "char-lstm-autograd"):
        for bad, said in ((math.inf, "got inf"), (True, "not a bool (True)"), ("0.1", "got '0.1'")):
            with pytest.raises(UserError, match=re.escape(
                    f"option 'init_scale' must be a finite number > 0, {said}")):
                build_model(name, (8,), 10, hidden=4, init_scale=bad)
        built = []
        for scale in (np.float32(0.5), 0.5):
            torch.manual_seed(0)
            built.append(build_model(name, (8,), 10, hidden=4, init_scale=scale))
        assert all(torch.equal(a, b) for a, b in zip(built[0].parameters(),
                                                    built[1].parameters()))
    with pytest.raises(UserError, match="vocabulary"):
        build_model("char-lstm-autograd", (8,), 1)


# --- measurements ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, opts", [("char-lstm-autograd", {"hidden": 3}),
                                        ("char-lstm", {"hidden": 3, "impl": "cells"}),
                                        ("char-lstm", {"hidden": 3}),
                                        ("ptb-lstm", {"hidden": 3, "dropout": 0.0}),
                                        ("ptb-lstm", {"hidden": 3, "dropout": 0.0,
                                                      "impl": "cells"})])
def test_hessian_top_eigenvalue_equals_the_dense_hessians(name, opts):
    torch.manual_seed(0)
    net = build_model(name, (4,), 5, layers=1, **opts) if name != "char-lstm-autograd" \
        else build_model(name, (4,), 5, **opts)
    net = net.double().eval()
    data = tokens(6, 4, 5)
    H = dense_hessian(net, F.cross_entropy, data)
    top = hessian_top_eigenvalue(net, F.cross_entropy, data, tol=1e-10)
    assert top == pytest.approx(torch.linalg.eigvalsh(H)[-1].item(), rel=1e-6)


def test_per_sample_gradients_are_vectorised_for_the_cells_and_equal_nn_lstms():
    torch.manual_seed(0)
    cells = build_model("char-lstm", (6,), 7, hidden=4, impl="cells").double().eval()
    fused = build_model("char-lstm", (6,), 7, hidden=4).double().eval()
    fused.load_state_dict(cells.state_dict())
    data = tokens(5, 6, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # vmap batches the cells
        G = per_sample_gradients(cells, F.cross_entropy, data)
    with pytest.warns(RuntimeWarning, match="one backward pass per sample"):
        G_ref = per_sample_gradients(fused, F.cross_entropy, data)
    torch.testing.assert_close(G, G_ref, rtol=0, atol=1e-12)
    x, y = data
    row = torch.autograd.grad(F.cross_entropy(cells(x[2:3]), y[2:3]), list(cells.parameters()))
    torch.testing.assert_close(G[2], torch.cat([g.reshape(-1) for g in row]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("opts", [{"impl": "cells"}, {}], ids=["cells", "torch"])
def test_the_registry_s_loss_gives_the_curvature_and_gradients_of_torch_s(opts):
    """``loss: cross_entropy`` on token data is SequenceCrossEntropyLoss (flattened rows):
    Hessian, GGN and empirical-Fisher products, the GGN's diagonal, per-sample gradients and
    the local-entropy gradient of Entropy-SGD's instrument equal those of torch's loss."""
    from sgdlab.measure import ggn_diagonal, local_entropy_gradient
    from sgdlab.operators import EmpiricalFisherOperator, GGNOperator, HessianOperator
    from sgdlab.train.losses import SequenceCrossEntropyLoss

    torch.manual_seed(0)
    net = build_model("char-lstm", (4,), 5, hidden=3, layers=1, **opts).double().eval()
    data = tokens(6, 4, 5)
    d = count_parameters(net)
    V = torch.randn(d, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours, plain = SequenceCrossEntropyLoss(), nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # nn.LSTM: one pass per sample
        for op in (HessianOperator, GGNOperator, EmpiricalFisherOperator):
            torch.testing.assert_close(op(net, ours, data).matmat(V),
                                       op(net, plain, data).matmat(V), rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(ggn_diagonal(net, ours, data), ggn_diagonal(net, plain, data),
                                   rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(per_sample_gradients(net, ours, data),
                                   per_sample_gradients(net, plain, data), rtol=1e-10,
                                   atol=1e-14)
        le = [local_entropy_gradient(net, loss, data, gamma=100.0, steps=3,
                                     generator=torch.Generator().manual_seed(2))
              for loss in (ours, plain)]
    torch.testing.assert_close(le[0], le[1], rtol=1e-10, atol=1e-14)


# --- Zaremba et al.'s step ------------------------------------------------------------------
def successor_windows(n: int, t: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows that start at a random token and then follow the rule ``s ↦ (7 s + 3) mod
    vocab`` (a permutation for vocab 20): every target is fixed by the token at its position,
    while the tokens' frequencies are near uniform (the unigram entropy near ln vocab)."""
    g = torch.Generator().manual_seed(seed)
    stream = [torch.randint(0, vocab, (n,), generator=g)]
    for _ in range(t):
        stream.append((7 * stream[-1] + 3) % vocab)
    s = torch.stack(stream, 1)
    return s[:, :-1].contiguous(), s[:, 1:].contiguous()


def _fit_successor_rule(lr: float, clip: float, *, t: int = 10, vocab: int = 20,
                        steps: int = 200, dtype=torch.float32, dropout: float = 0.5,
                        sequence_loss: str = "mean") -> tuple:
    """(model before, model after, dataset, final metrics and batch_loss) of ``steps`` SGD
    steps of the cpu-scale ptb-lstm (2 × 100, init 0.05) as the ``train`` procedure takes
    them: on sgdlab's loss (the mean per token) or, ``sequence_loss="window-sum"``, on it
    times T, batches of 20 (one step: all 200 windows), gradients clipped to ``clip``."""
    from sgdlab.losses import build_loss
    from sgdlab.optim.registry import build_optimizer_for
    from sgdlab.train.loop import train

    xtr, ytr = successor_windows(200, t, vocab, 0)
    xte, yte = successor_windows(40, t, vocab, 1)
    ds = Dataset(xtr, ytr, xte, yte, {"name": "_successor", "task": "classification",
                                      "input_shape": (t,), "num_outputs": vocab})
    torch.manual_seed(0)
    net = build_model("ptb-lstm", (t,), vocab, hidden=100, dropout=dropout,
                      init_scale=0.05).to(dtype)
    before = copy.deepcopy(net)
    loss = build_loss(None, ds)
    opt = build_optimizer_for("sgd", net, loss_fn=loss, data=ds.train, lr=lr)
    res = train(net, loss, ds, opt, epochs=100, max_steps=steps,
                batch_size=20 if steps > 1 else len(xtr), seed=0, clip_grad_norm=clip,
                sequence_loss=sequence_loss, progress=False, eval_every=0)
    # (with the last epoch's mean logged loss)
    return before, net, ds, {**res.final, "batch_loss": res.history["batch_loss"][-1][1]}


@pytest.mark.parametrize("how", ["window-sum", "lr-t-clip-over-t"])
@pytest.mark.parametrize("clip", [0.05, 1000.0], ids=["clipped", "unclipped"])
def test_zarembas_step_on_the_window_s_summed_loss_is_t_times_the_per_token_step_in_float64(
        clip, how):
    """Zaremba et al.'s Lua code back-propagates each of the T positions' batch-mean losses
    with weight 1 (their sum) and clips that gradient: ``sequence_loss="window-sum"`` steps
    on that loss with their lr η and clip c; on sgdlab's loss, the mean over the T positions,
    lr T η and clip c / T are the same step. The logged loss stays the per-token mean."""
    t, lr = 10, 1.0
    before, after, ds, final = (
        _fit_successor_rule(lr, clip, t=t, steps=1, dtype=torch.float64, dropout=0.0,
                            sequence_loss="window-sum") if how == "window-sum" else
        _fit_successor_rule(t * lr, clip / t, t=t, steps=1, dtype=torch.float64, dropout=0.0))
    per_position = F.cross_entropy(before(ds.x_train), ds.y_train, reduction="none")
    grads = torch.autograd.grad(per_position.sum(1).mean(), list(before.parameters()))
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert (norm > clip) == (clip < 1)      # both sides of the clipping are exercised
    # torch's clip_grad_norm_ divides by the norm + 1e-6 (through lr T: of the per-token
    # gradient, norm / T)
    scale = min(1.0, clip / (norm + (1 if how == "window-sum" else t) * 1e-6))
    for p, q, g in zip(before.parameters(), after.parameters(), grads):
        torch.testing.assert_close(q, p - lr * g * scale, rtol=1e-10, atol=1e-13)
    with torch.no_grad():
        trained = F.cross_entropy(after(ds.x_train), ds.y_train)
    assert final["train_loss"] == pytest.approx(float(trained), rel=1e-10)
    assert final["batch_loss"] == pytest.approx(float(per_position.detach().mean()), rel=1e-10)


def test_ptb_lstm_learns_a_successor_rule_at_zarembas_step_not_at_lr_1_per_token():
    """At Zaremba et al.'s lr 1 and clip 5 on the window's summed loss (``window-sum``) 200
    steps take the loss from the unigram entropy ln 20 = 3.0 to below a quarter of it (the
    rule's is 0); lr 1 on the per-token mean is a step T times smaller and leaves it at the
    unigram entropy (on text_words too: docs/design/data-models.md)."""
    t, unigram = 10, math.log(20)
    *_, zaremba = _fit_successor_rule(1.0, 5.0, t=t, sequence_loss="window-sum")
    *_, per_token = _fit_successor_rule(1.0, 5.0, t=t)
    assert zaremba["train_loss"] < 0.25 * unigram and zaremba["test_loss"] < 0.25 * unigram
    assert per_token["train_loss"] > 0.9 * unigram


# --- training from a run config -------------------------------------------------------------
@pytest.fixture
def token_dataset():
    """A dataset of random token windows, registered for run configs while the test runs."""
    def load(*, seed: int = 0, vocab: int = 6, length: int = 5) -> Dataset:
        xtr, ytr = tokens(24, length, vocab, seed)
        xte, yte = tokens(8, length, vocab, seed + 1)
        return Dataset(xtr, ytr, xte, yte, {"name": "_test-tokens", "task": "classification",
                                            "input_shape": (length,), "num_outputs": vocab,
                                            "seed": seed})
    register_dataset("_test-tokens")(load)
    yield "_test-tokens"
    DATASETS.pop("_test_tokens")


STOP_AT: list[int] = []


@pytest.fixture
def stop_instrument():
    """An instrument that raises KeyboardInterrupt (Ctrl-C) at the end of step ``STOP_AT[0]``."""
    from sgdlab.train.callbacks import Callback
    from sgdlab.train.instruments import INSTRUMENTS, register_instrument

    class Stop(Callback):
        def __init__(self, schedule):
            self.schedule = schedule

        def on_step_end(self, ctx):
            if STOP_AT and ctx.step == STOP_AT[0]:
                STOP_AT.clear()
                raise KeyboardInterrupt

    register_instrument("_test_stop")(lambda *, schedule: Stop(schedule))
    yield "_test_stop"
    INSTRUMENTS.pop("_test_stop")
    STOP_AT.clear()


@pytest.mark.parametrize("model, optimizer", [
    ("{name: char-lstm-autograd, options: {hidden: 4}}", "{name: adam, lr: 0.01}"),
    ("{name: char-lstm, options: {hidden: 4}}", "{name: entropy_adam, lr: 0.01, L: 2, gamma: 100}"),
    ("{name: ptb-lstm, options: {hidden: 4, dropout: 0.5}}",
     "{name: entropy_sgd, lr: 1.0, L: 2, gamma: 1000, momentum: 0.5}"),
    ("{name: ptb-lstm, options: {hidden: 4, layers: 1, dropout: 0.5, impl: cells}}",
     "{name: sgd, lr: 1.0}"),
])
def test_trains_from_a_run_config_and_resumes_to_the_same_weights(
        tmp_path, capsys, token_dataset, stop_instrument, model, optimizer):
    """6 steps (3 batches of 8 windows a epoch), a checkpoint every 4, the Hessian's top
    eigenvalue every 3; the same run stopped by Ctrl-C at step 5 and resumed from its step-4
    checkpoint ends at the uninterrupted run's weights."""
    from sgdlab.cli.main import main
    from sgdlab.store import RunStore

    cfg = tmp_path / "lstm.yaml"
    cfg.write_text(f"name: lstm\ndata: {{name: {token_dataset}, seed: 0}}\nmodel: {model}\n"
                   f"optimizer: {optimizer}\n"
                   "train: {epochs: 2, batch_size: 8, checkpoint_every: 4, threads: 1, "
                   "progress: false}\n"
                   "measure: [{name: hessian, every: 3, eval_subset: 8}, "
                   f"{{name: {stop_instrument}, every: 1}}]\n")
    store_path = tmp_path / "runs.sqlite"
    assert main(["train", str(cfg), "--store", str(store_path), "--out",
                 str(tmp_path / "a")]) == 0
    assert "finished after 6 steps" in capsys.readouterr().out
    store = RunStore(store_path)
    (ref_run,) = store.list_runs()
    tops = store.metrics(ref_run["id"], "hess/top_1")["hess/top_1"]
    assert [s for s, _ in tops] == [0, 3, 6] and all(v > 0 for _, v in tops)
    metrics = store.metrics(ref_run["id"])
    # the evaluations read per-token accuracy from the (N, V, T) outputs
    assert all(0 <= v <= 1 for _, v in metrics["test_acc"]) and metrics["test_loss"]

    STOP_AT.append(5)
    assert main(["train", str(cfg), "--store", str(store_path), "--out",
                 str(tmp_path / "b")]) == 130
    (run,) = [r for r in store.list_runs() if r["id"] != ref_run["id"]]
    assert run["status"] == "interrupted"
    assert main(["resume", run["id"], "--store", str(store_path)]) == 0
    assert "resumed from step 4" in capsys.readouterr().out
    ref = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    res = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert ref["loop"]["step"] == res["loop"]["step"] == 6
    assert ref["model"].keys() == res["model"].keys()
    for k in ref["model"]:
        assert torch.equal(ref["model"][k], res["model"][k]), k
    assert store.metrics(run["id"]) == store.metrics(ref_run["id"])


def test_a_run_config_refuses_a_model_of_the_other_input_kind(tmp_path, capsys, token_dataset):
    """An MLP on token windows failed inside its first layer, with a traceback, after the run
    was recorded ("mat1 and mat2 must have the same dtype, but got Long and Float"); now the
    config is refused before, naming the sequence models."""
    from sgdlab.cli.main import main
    from sgdlab.models import check_model_inputs
    from sgdlab.store import RunStore

    cfg = tmp_path / "mlp.yaml"
    cfg.write_text(f"name: mlp\ndata: {{name: {token_dataset}}}\nmodel: {{name: mlp}}\n"
                   "optimizer: {name: sgd, lr: 0.1}\n"
                   "train: {epochs: 1, batch_size: 8, threads: 1, progress: false}\n")
    store_path = tmp_path / "runs.sqlite"
    assert main(["train", str(cfg), "--store", str(store_path), "--out",
                 str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert ("model 'mlp' takes floating point features, but dataset '_test-tokens' holds "
            "torch.int64 tokens shaped (24, 5): use a sequence model (char-lstm, "
            "char-lstm-autograd, ptb-lstm)") in err and "Traceback" not in err
    assert not store_path.exists() or not RunStore(store_path).list_runs()
    with pytest.raises(UserError, match="model 'char-lstm' reads integer tokens"):
        check_model_inputs("char-lstm", torch.randn(4, 5))
    check_model_inputs("char-lstm", torch.zeros(4, 5, dtype=torch.int64))
    check_model_inputs("mlp", torch.randn(4, 5))


@pytest.mark.parametrize("name, inputs, opts", [
    # Zaremba et al.: dropout on every non-recurrent connection: the embedding's output,
    # between the layers, before the output layer (0.65 for the large model)
    ("ptb-lstm", [(2, 3, 4), (2, 3, 4), (2, 3, 4)], {}),
    # char-rnn: between layers and before the output layer, never on the one-hot input
    ("char-lstm", [(2, 3, 4), (2, 3, 4)], {"dropout": 0.65}),
])
def test_dropout_falls_on_the_non_recurrent_connections_only(name, inputs, opts, monkeypatch):
    net = build_model(name, (3,), 6, hidden=4, impl="cells", **opts)
    seen = []
    real = F.dropout

    def spy(x, p=0.5, training=True, inplace=False):
        seen.append((tuple(x.shape), p, training))
        return real(x, p, training, inplace)
    monkeypatch.setattr(F, "dropout", spy)
    net.train()(torch.zeros(2, 3, dtype=torch.long))
    assert seen == [(shape, 0.65, True) for shape in inputs]


def test_initialisations_fill_their_stated_ranges():
    torch.manual_seed(0)
    # nn.LSTM's default U(-1/sqrt(H), 1/sqrt(H)) for LSTMStack; Zaremba's U(-0.04, 0.04)
    for params, bound in ((LSTMStack(3, 16).parameters(), 0.25),
                          (build_model("ptb-lstm", (3,), 50, hidden=16).parameters(), 0.04)):
        flat = torch.cat([p.detach().flatten() for p in params])
        assert flat.abs().max() <= bound
        assert flat.min() < -0.9 * bound and flat.max() > 0.9 * bound
    with pytest.raises(UserError, match="at least 2 tokens"):
        build_model("ptb-lstm", (3,), 1, hidden=4)
