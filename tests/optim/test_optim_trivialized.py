"""Trivialized-SGD (annealed fixed field) and the resampled-annealed-noise control, and the
RMSProp-then-SGD switch: update rules against explicit replays, resume from state_dict."""
import copy
import io
import math

import pytest
import torch
from torch import nn

from sgdlab.optim import build_optimizer, build_optimizer_for
from sgdlab.optim.trivialized import field_strength, trivialization_heuristics
from sgdlab.testing import TinyAttention, tiny_classification, tiny_mlp, weight_tensor_mask

LOSS = nn.CrossEntropyLoss()
X, Y = tiny_classification(n=16, seed=1)


def _grads(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def _run(model, opt, steps):
    for _ in range(steps):
        opt.zero_grad()
        LOSS(model(X), Y).backward()
        opt.step()


def _rmsprop_then_sgd(model, switch_step):
    """Zhu et al.'s switch on ``model``: RMSProp at 1e-2, then SGD at 0.1 with momentum 0.9."""
    return build_optimizer_for("switch", model, first="rmsprop", second="sgd",
                               switch_step=switch_step, first_hyper=dict(lr=1e-2),
                               second_hyper=dict(lr=0.1, momentum=0.9))


def test_field_strength_formula():
    # (1 + 2 τ_i / N)^{1/2}, τ_i = n (e^{-i/τ0} - 1/2)
    for i, n, big_n, tau0 in [(0, 10, 10, 5.0), (3, 4, 10, 2.0), (50, 10, 10, 5.0)]:
        tau = n * (math.exp(-i / tau0) - 0.5)
        assert field_strength(i, n=n, num_spins=big_n, tau0=tau0) == pytest.approx(
            math.sqrt(1 + 2 * tau / big_n))
    assert field_strength(0, n=7, num_spins=7, tau0=1.0) == pytest.approx(math.sqrt(2))
    s = field_strength(torch.arange(3.0), n=7, num_spins=7, tau0=1.0)
    assert torch.allclose(s, math.sqrt(2) * torch.exp(-torch.arange(3.0) / 2))


def test_heuristics_are_thesis_2_4_2():
    """p = number of layers, N = (# weights / p)^{1/2}; a conv + BN + pool block is one layer."""
    deep = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(),
                         nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 2))
    d = sum(p.numel() for p in deep.parameters())
    h = trivialization_heuristics(deep)
    assert h == {"p": 4, "num_spins": pytest.approx(math.sqrt(d / 4)), "layers": 4}
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    h = trivialization_heuristics(cnn)
    assert h["p"] == h["layers"] == 3
    assert h["num_spins"] == pytest.approx(math.sqrt(sum(p.numel() for p in cnn.parameters())
                                                     / 3))
    small = trivialization_heuristics(tiny_mlp())
    assert small["layers"] == 2 and small["p"] == 3                 # raised to 3 (zero field)


def test_a_transposed_convolution_is_a_weight_layer():
    """A decoder: conv, transposed conv, conv: three layers of 2·4·9 + 4, 4·3·16 + 3 and
    3·1·1 + 1 = 76, 195 and 4 weights; p = 3, N = (275 / 3)^{1/2}."""
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.ConvTranspose2d(4, 3, 4, stride=2),
                        nn.ReLU(), nn.Conv2d(3, 1, 1))
    assert trivialization_heuristics(net) == {"p": 3, "num_spins": math.sqrt(275 / 3),
                                              "layers": 3}
    h = trivialization_heuristics(net, p_count="hidden-layers", field_on="weights")
    assert h == {"p": 3, "num_spins": math.sqrt((72 + 192 + 3) / 2), "layers": 3}


def test_an_attention_classifier_counts_embedding_input_and_output_projections_and_head():
    """Embedding 6·4 = 24; input projection 3·4·4 + 12 = 60; out_proj 4·4 + 4 = 20; head
    4·2 + 2 = 10: four layers, 114 weights. Keys and values of another width (kdim 5) take
    three projection tensors, still one layer: 16 + 2·20 + 12 = 68, and out_proj 20."""
    assert trivialization_heuristics(TinyAttention()) == {
        "p": 4, "num_spins": math.sqrt(114 / 4), "layers": 4}
    assert trivialization_heuristics(nn.MultiheadAttention(4, 2, kdim=5, vdim=5)) == {
        "p": 3, "num_spins": math.sqrt(88 / 2), "layers": 2}
    frozen = TinyAttention()
    frozen.emb.weight.requires_grad_(False)             # a fixed embedding: no layer of p
    assert trivialization_heuristics(frozen) == {
        "p": 3, "num_spins": math.sqrt(90 / 3), "layers": 3}


def test_a_recurrent_stack_counts_one_layer_per_stacked_layer():
    """nn.LSTM(3, 4, num_layers=2, bidirectional=True) and a head: two layers, the reverse
    direction beside the forward one; 2·(16·3 + 16·4 + 32) + 2·(16·8 + 16·4 + 32) = 736, and
    the head 8·2 + 2 = 18: p = 3, N = (754 / 3)^{1/2}."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
            self.head = nn.Linear(8, 2)

    assert trivialization_heuristics(Net()) == {"p": 3, "num_spins": math.sqrt(754 / 3),
                                                "layers": 3}


def test_update_is_base_step_on_gradient_plus_annealed_fixed_field():
    model = tiny_mlp(seed=0)
    opt = build_optimizer_for("trivialized", model, lr=0.1, coupling=0.05, tau0=3.0, seed=2)
    d = sum(p.numel() for p in model.parameters())
    assert opt.p == 3 and opt.num_spins == pytest.approx(math.sqrt(d / 2)) == opt.n
    h = opt.field.clone()
    assert h.shape == (d,)
    for i in range(3):
        opt.zero_grad()
        LOSS(model(X), Y).backward()
        g, theta = _grads(model), _flat(model)
        opt.step()
        s = math.sqrt(1 + 2 * d * (math.exp(-i / 3.0) - 0.5) / d)
        torch.testing.assert_close(_flat(model), theta - 0.1 * (g + s * h))
        torch.testing.assert_close(_grads(model), g, rtol=0, atol=0)   # grads restored
    assert torch.equal(opt.field, h)                                    # the field is fixed


def test_field_distribution():
    w = torch.zeros(40000, requires_grad=True)
    opt = build_optimizer("trivialized", [w], lr=0.1, coupling=0.5, p=4)
    scale = 0.5 * math.sqrt(4 * 2)
    assert float(opt.field.mean()) == pytest.approx(0, abs=5 * scale / 200)
    assert float(opt.field.std()) == pytest.approx(scale, rel=0.02)


def test_resampled_control_draws_fresh_noise_with_same_strength():
    w = torch.zeros(5000, requires_grad=True)
    opt = build_optimizer("annealed-noise", [w], lr=1.0, coupling=0.1, p=3, tau0=10.0)
    scale = 0.1 * math.sqrt(3)
    steps = []
    for i in range(3):
        w.grad = torch.zeros_like(w)
        before = w.detach().clone()
        opt.step()
        steps.append((before - w.detach()) / field_strength(i, n=5000, num_spins=5000,
                                                             tau0=10.0))
    for st in steps:
        assert float(st.std()) == pytest.approx(scale, rel=0.05)
    # independent draws (a fixed field would give corr = 1)
    assert abs(float(torch.corrcoef(torch.stack(steps[:2]))[0, 1])) < 0.06


@pytest.mark.parametrize("base,hyper", [
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adam", dict(lr=1e-2)),
])
def test_wraps_base_optimizer_exactly(base, hyper):
    """With the field replayed into the gradient, a plain base optimizer follows the same path."""
    m1, m2 = tiny_mlp(seed=0), tiny_mlp(seed=0)
    opt = build_optimizer_for("trivialized", m1, base=base, coupling=0.02, tau0=4.0, **hyper)
    ref = build_optimizer(base, m2.parameters(), **hyper)
    h = opt.field
    for i in range(4):
        _run(m1, opt, 1)
        ref.zero_grad()
        LOSS(m2(X), Y).backward()
        s = opt.strength(i)
        a = 0
        for p in m2.parameters():
            p.grad += s * h[a:a + p.numel()].view_as(p)
            a += p.numel()
        ref.step()
    torch.testing.assert_close(_flat(m1), _flat(m2), rtol=0, atol=1e-12)


def _round_trip(name, make, k=3):
    model0 = tiny_mlp(seed=0)
    straight = copy.deepcopy(model0)
    _run(straight, make(straight, 0), 2 * k)
    first = copy.deepcopy(model0)
    opt = make(first, 0)
    _run(first, opt, k)
    buf = io.BytesIO()
    torch.save({"m": first.state_dict(), "o": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    fresh = tiny_mlp(seed=5)
    fresh.load_state_dict(saved["m"])
    opt2 = make(fresh, 99)
    opt2.load_state_dict(saved["o"])
    _run(fresh, opt2, k)
    for p, q in zip(straight.parameters(), fresh.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("name", ["trivialized", "annealed-noise"])
def test_trivialized_round_trip(name):
    _round_trip(name, lambda m, seed: build_optimizer_for(
        name, m, lr=0.05, momentum=0.9, coupling=0.01, tau0=2.0, seed=seed))


def test_switch_round_trip_across_the_switch():
    _round_trip("switch", lambda m, seed: _rmsprop_then_sgd(m, 4))


def test_switch_is_rmsprop_then_sgd():
    m1, m2 = tiny_mlp(seed=0), tiny_mlp(seed=0)
    opt = _rmsprop_then_sgd(m1, 3)
    assert isinstance(opt.active, torch.optim.RMSprop)
    _run(m1, opt, 3)
    _run(m2, torch.optim.RMSprop(m2.parameters(), lr=1e-2), 3)
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert opt.switched and isinstance(opt.active, torch.optim.SGD)
    assert opt.param_groups[0]["lr"] == 0.1
    _run(m1, opt, 2)
    _run(m2, torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9), 2)
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))


@pytest.mark.parametrize("schedule,hyper,lrs", [
    ("constant", {}, [1e-2, 1e-2, 0.1, 0.1, 0.1]),
    ("step", dict(milestones=[2], gamma=0.5), [1e-2, 1e-2, 0.05, 0.05, 0.05]),
])
def test_switch_under_a_schedule_runs_each_optimizer_at_its_own_rate(schedule, hyper, lrs):
    """The schedule scales the active optimizer's own rate: after the switch SGD's 0.1, not
    RMSProp's 1e-2 (one step per epoch: step 2 is the milestone, and the switch)."""
    from sgdlab.optim import build_schedule

    m = tiny_mlp(seed=0)
    opt = build_optimizer_for("switch", m, first="rmsprop", second="sgd", switch_step=2,
                              first_hyper=dict(lr=1e-2), second_hyper=dict(lr=0.1))
    sched = build_schedule(schedule, opt, steps_per_epoch=1, total_steps=5, **hyper)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        _run(m, opt, 1)
        sched.step()
    assert seen == pytest.approx(lrs)


@pytest.mark.parametrize("name,kw,match", [
    ("trivialized", dict(lr=0.1, coupling=0.0), "coupling"),
    ("trivialized", dict(lr=0.1, coupling=math.inf), "coupling"),     # an infinite field
    ("trivialized", dict(lr=0.1, tau0=-1.0), "tau0"),
    ("trivialized", dict(lr=0.1, p=2), "p"),
    ("trivialized", dict(lr=0.1, n=1e9), "n"),
    ("trivialized", dict(lr=0.1, base="nope"), "base"),
    ("trivialized", dict(lr=0.1, base="gld-const"), "base"),
    ("switch", dict(first="nope", switch_step=1), "first"),
    ("switch", dict(second="gld-dynamic", switch_step=1), "second"),
    ("switch", dict(switch_step=-1), "switch_step"),
])
def test_invalid_hyper_parameters(name, kw, match):
    with pytest.raises(ValueError, match=match):
        build_optimizer_for(name, tiny_mlp(), **kw)


def test_thesis_mnistfc_setting():
    """§2.4.3: the 16-hidden-layer mnistfc with J = 1e-3, τ₀ = 500 under Adam: p = 17 layers,
    h ~ J√(p(p−2)) N(0, I) over all d weights, strength √2 e^{−i/(2τ₀)} (n = N)."""
    from sgdlab.models import build_model

    torch.manual_seed(0)
    model = build_model("deep-mnistfc", (1, 28, 28), 10)
    opt = build_optimizer_for("trivialized", model, base="adam", lr=1e-3, weight_decay=1e-5,
                              coupling=1e-3, tau0=500.0, seed=0)
    d = sum(p.numel() for p in model.parameters())
    assert opt.p == 17 and opt.num_spins == pytest.approx(math.sqrt(d / 17))
    assert float(opt.field.std()) == pytest.approx(1e-3 * math.sqrt(17 * 15), rel=0.01)
    for i in (0, 500, 2000):
        assert opt.strength(i) == pytest.approx(math.sqrt(2) * math.exp(-i / 1000))


@pytest.mark.parametrize("name", ["trivialized", "annealed-noise"])
def test_add_param_group_gets_field_coordinates_and_round_trips(name):
    """A group added after construction is trained on gradient + field like the first ones (the
    fixed field grows by fresh draws, the first coordinates unchanged), and the state_dict of
    the grown optimizer resumes bit for bit."""
    def make(m, seed):
        first, second = [mod for mod in m if isinstance(mod, nn.Linear)]
        opt = build_optimizer(name, list(first.parameters()), lr=0.05, p=3, num_spins=4.0,
                              coupling=0.01, tau0=2.0, seed=seed)
        h0 = opt.field.clone()
        opt.add_param_group({"params": list(second.parameters()), "lr": 0.02})
        assert torch.equal(opt.field[:h0.numel()], h0)
        return opt

    m = tiny_mlp(seed=0)
    opt = make(m, 0)
    d = sum(p.numel() for p in m.parameters())
    if name == "trivialized":
        assert opt.field.numel() == d
        h = opt.field.clone()
    else:       # the step draws a fresh field over all d coordinates
        gen = torch.Generator()
        gen.set_state(opt.generator.get_state())
        h = opt.field_scale * torch.randn(d, generator=gen, dtype=torch.float64)
    before, s = _flat(m), opt.strength()
    opt.zero_grad()
    LOSS(m(X), Y).backward()
    g = _grads(m)
    opt.step()
    lr = torch.cat([torch.full((p.numel(),), 0.05 if i < 2 else 0.02, dtype=torch.float64)
                    for i, p in enumerate(m.parameters())])
    torch.testing.assert_close(_flat(m), before - lr * (g + s * h), rtol=0, atol=1e-14)
    _round_trip(name, make)


def test_switch_add_param_group_trains_the_group_after_the_switch():
    """A group added to the switch belongs to both optimizers: the run equals the one built
    with that group from the start, across the switch; zero_grad clears it after the switch."""
    def make(m, split):
        first, second = [mod for mod in m if isinstance(mod, nn.Linear)]
        params = list(first.parameters()) + ([] if split else list(second.parameters()))
        opt = build_optimizer("switch", params, first="rmsprop", second="sgd", switch_step=2,
                              first_hyper=dict(lr=1e-2), second_hyper=dict(lr=0.1, momentum=0.9))
        if split:
            opt.add_param_group({"params": list(second.parameters())})
        return opt

    m1, m2 = tiny_mlp(seed=0), tiny_mlp(seed=0)
    o1, o2 = make(m1, False), make(m2, True)
    _run(m1, o1, 5)
    _run(m2, o2, 5)
    assert o2.switched
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    o2.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in m2.parameters())


def test_switch_groups_given_as_iterators_reach_both_optimizers():
    """Groups written the torch way, ``{"params": layer.parameters()}``: the run equals the one
    built from lists, across the switch (an iterator shared by both would leave the second
    optimizer with empty groups: nothing would move after the switch)."""
    def make(m, lists):
        first, second = [mod for mod in m if isinstance(mod, nn.Linear)]
        wrap = list if lists else iter
        return build_optimizer("switch", [{"params": wrap(first.parameters())},
                                          {"params": wrap(second.parameters()), "lr": 0.05}],
                               first="rmsprop", second="sgd", switch_step=2,
                               first_hyper=dict(lr=1e-2), second_hyper=dict(lr=0.1))

    m1, m2 = tiny_mlp(seed=0), tiny_mlp(seed=0)
    o1, o2 = make(m1, True), make(m2, False)
    assert [len(g["params"]) for g in o2.second.param_groups] == [2, 2]
    before = _flat(m2)
    _run(m1, o1, 4)
    _run(m2, o2, 4)
    assert o2.switched and not torch.equal(_flat(m2), before)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)


def test_trivialized_over_switch_exposes_the_stepping_optimizers_groups():
    """After the switch the wrapper's param_groups and state are the second optimizer's: an
    lr set through the wrapper (or a schedule on it) reaches the optimizer that steps."""
    m = tiny_mlp(seed=0)
    opt = build_optimizer("trivialized", m.parameters(), base="switch", p=3, seed=1,
                          switch_step=1, first="rmsprop", second="sgd",
                          first_hyper=dict(lr=0.01), second_hyper=dict(lr=0.1))
    _run(m, opt, 2)
    assert opt.base.switched
    assert opt.param_groups is opt.base.second.param_groups
    assert opt.state is opt.base.second.state
    for g in opt.param_groups:
        g["lr"] = 0.0
    before = _flat(m)
    _run(m, opt, 1)
    assert torch.equal(_flat(m), before)


def test_p_count_hidden_layers_leaves_out_the_output_layer():
    """§2.4.2 calls p both "the number of hidden layers" (line 682) and "the number of layers"
    (line 686): ``p_count="hidden-layers"`` gives the 16-hidden-layer mnistfc p = 16, so the
    field is J√(16·14) N(0, I) and N = (d / 16)^{1/2}; the default stays p = 17."""
    from sgdlab.models import build_model

    torch.manual_seed(0)
    model = build_model("deep-mnistfc", (1, 28, 28), 10)
    d = sum(p.numel() for p in model.parameters())
    h = trivialization_heuristics(model, p_count="hidden-layers")
    assert h == {"p": 16, "num_spins": pytest.approx(math.sqrt(d / 16)), "layers": 17}
    assert trivialization_heuristics(model)["p"] == 17
    opt = build_optimizer_for("trivialized", model, base="adam", lr=1e-3, coupling=1e-3,
                              tau0=500.0, seed=0, p_count="hidden-layers")
    assert opt.p == 16 and opt.field_scale == pytest.approx(1e-3 * math.sqrt(16 * 14))
    assert float(opt.field.std()) == pytest.approx(1e-3 * math.sqrt(16 * 14), rel=0.01)
    # a small network still gets p >= 3 (a zero field otherwise)
    assert trivialization_heuristics(tiny_mlp(), p_count="hidden-layers")["p"] == 3
    with pytest.raises(ValueError, match="p_count 'output-layers'"):
        trivialization_heuristics(model, p_count="output-layers")
    with pytest.raises(ValueError, match="p_count"):
        build_optimizer_for("trivialized", model, base="adam", p_count="layers")


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_a_base_step_that_raises_leaves_the_true_gradients(sparse):
    # the field stayed in p.grad (and a sparse gradient stayed densified) when the base
    # optimizer's step raised
    torch.manual_seed(0)
    model = nn.Sequential(nn.EmbeddingBag(10, 3, mode="mean", sparse=sparse), nn.Linear(3, 2))
    opt = build_optimizer_for("trivialized", model, lr=0.1, coupling=0.5, seed=0)
    x = torch.randint(0, 10, (8, 4))
    LOSS(model(x), torch.randint(0, 2, (8,))).backward()
    before = [p.grad.clone() for p in model.parameters()]

    def failing_step(*args, **kwargs):
        assert not model[0].weight.grad.is_sparse        # the field is in the gradient now
        raise RuntimeError("base step failed")

    opt.base.step = failing_step
    with pytest.raises(RuntimeError, match="base step failed"):
        opt.step()
    assert model[0].weight.grad.is_sparse == sparse
    for p, g in zip(model.parameters(), before):
        torch.testing.assert_close(p.grad.to_dense(), g.to_dense(), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["trivialized", "annealed-noise"])
def test_last_perturbation_is_the_term_the_step_added(name):
    """(s_i, h) of the latest step: with plain SGD at lr 1, θ_before − θ_after − ∇f = s_i h
    exactly as reported (the draw of that step when resampling); None before any step; after
    a resume the fixed field's is known (strength of the last step), a resampled draw not."""
    model = tiny_mlp(seed=0)
    opt = build_optimizer_for(name, model, lr=1.0, coupling=0.05, tau0=3.0, seed=2)
    assert opt.last_perturbation() is None
    seen = []
    for i in range(3):
        opt.zero_grad()
        LOSS(model(X), Y).backward()
        g, theta = _grads(model), _flat(model)
        opt.step()
        s, h = opt.last_perturbation()
        assert s == opt.strength(i) and h.dtype == torch.float64
        torch.testing.assert_close(theta - _flat(model) - g, s * h, rtol=1e-12, atol=1e-15)
        seen.append(h.clone())
    assert torch.equal(seen[0], seen[2]) == (name == "trivialized")
    resumed = build_optimizer_for(name, model, lr=1.0, coupling=0.05, tau0=3.0, seed=2)
    resumed.load_state_dict(opt.state_dict())
    if name == "trivialized":
        s, h = resumed.last_perturbation()
        assert s == opt.strength(2) and torch.equal(h, seen[2])
    else:
        assert resumed.last_perturbation() is None


def test_algorithm_1_by_hand_with_n_below_big_n_and_nesterov():
    """Algorithm 1 (thesis lines 499-511) written out in float64 for four steps, with n < N so
    that the annealing does not reduce to √2 e^{−i/(2τ₀)}: h ← J√(p(p−2)) N(0, I) once (line 4,
    the draw of a generator seeded as the optimizer's); τ_i = n(e^{−i/τ₀} − 1/2) (line 8,
    eq. (2.20)); h_curr = (1 + 2τ_i/N)^{1/2} h (line 9, eq. (2.19)); line 10's step on
    ∇loss + h_curr taken by SGD with Nesterov's momentum, the thesis' base ("in our experiments,
    we use SGD with Nesterov's momentum", line 497; torch's form, weight decay on the loss)."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    Q, b = A @ A.T / 6 + 0.5 * torch.eye(6, dtype=torch.float64), torch.randn(6, generator=g,
                                                                           dtype=torch.float64)
    x0 = torch.randn(6, generator=g, dtype=torch.float64)
    J, p, N, n, tau0, eta, mu, wd, seed = 0.3, 4, 50.0, 20.0, 2.0, 0.05, 0.9, 1e-2, 21
    h = J * math.sqrt(p * (p - 2)) * torch.randn(6, generator=torch.Generator().manual_seed(seed),
                                                 dtype=torch.float64)            # line 4
    x, buf = x0.clone(), None
    for i in range(4):
        tau = n * (math.exp(-i / tau0) - 0.5)                                    # line 8
        h_curr = math.sqrt(1 + 2 * tau / N) * h                                  # line 9
        grad = Q @ x + b + wd * x + h_curr                                       # line 10
        buf = grad.clone() if buf is None else mu * buf + grad
        x = x - eta * (grad + mu * buf)
    w = nn.Parameter(x0.clone())
    opt = build_optimizer("trivialized", [w], lr=eta, momentum=mu, nesterov=True,
                          weight_decay=wd, coupling=J, p=p, num_spins=N, n=n, tau0=tau0,
                          seed=seed)
    torch.testing.assert_close(opt.field, h, rtol=0, atol=1e-15)
    for _ in range(4):
        w.grad = (Q @ w.detach() + b).clone()
        opt.step()
    torch.testing.assert_close(w.detach(), x, rtol=0, atol=1e-13)
    # the annealing with n < N ends above n = N's: (1 − n/N)^{1/2} > 0 at i → ∞
    assert opt.strength(10 ** 6) == pytest.approx(math.sqrt(1 - n / N), rel=1e-12)


def test_switch_step_zero_runs_the_second_optimizer_from_the_start():
    """switch_step k >= 0 steps of the first: k = 0 is the second alone (Zhu et al.'s
    RMSProp → SGD with no RMSProp phase)."""
    m1, m2 = tiny_mlp(seed=0), tiny_mlp(seed=0)
    opt = _rmsprop_then_sgd(m1, 0)
    assert opt.switched and opt.param_groups[0]["lr"] == 0.1
    _run(m1, opt, 2)
    _run(m2, torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9), 2)
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))


def _switch(switch_step, first="rmsprop", params=None):
    params = [torch.zeros(2, requires_grad=True)] if params is None else params
    return build_optimizer("switch", params, first=first, second="sgd", switch_step=switch_step,
                           first_hyper=dict(lr=1e-2), second_hyper=dict(lr=0.1))


def test_switch_state_puts_the_saved_switch_step_back_and_refuses_other_optimizers():
    """Loading restores the saved switch_step (the settings() docstring; a resume with
    another one is refused before that) and is refused for another pair of optimizers."""
    src = _switch(5)
    for p in src.param_groups[0]["params"]:
        p.grad = torch.ones(2)
    for _ in range(3):
        src.step()
    dst = _switch(2)
    dst.load_state_dict(src.state_dict())
    assert dst.switch_step == 5 and not dst.switched and dst.active is dst.first
    with pytest.raises(ValueError, match=r"state_dict is for optimizers \['rmsprop', 'sgd'\], "
                                         r"not \['adam', 'sgd'\]"):
        _switch(5, first="adam").load_state_dict(src.state_dict())


def test_switch_settings_name_the_groups_of_the_optimizer_not_active_at_construction():
    before = _switch(2).settings()
    assert before["second.lr"] == 0.1 and "first.lr" not in before
    after = _switch(0).settings()
    assert after["first.lr"] == 1e-2 and "second.lr" not in after


def test_a_key_set_on_the_second_optimizers_group_after_the_switch_stays():
    # the first's keys go to the second only where it lacks them: not back over a new value
    p = torch.zeros(2, requires_grad=True)
    opt = _switch(1, params=[{"params": [p], "tag": "a"}])
    p.grad = torch.ones(2)
    opt.step()
    opt.param_groups[0]["tag"] = "b"
    opt.step()
    assert opt.param_groups[0]["tag"] == "b"


def test_a_parameter_without_gradient_keeps_its_field_coordinates():
    """The field is flat over all parameters in group order, whether or not each has a
    gradient at a step: u (3 coordinates) left out of the loss is not stepped, and v gets
    h[3:], the coordinates after u's, not h[:2]. Plain SGD at lr 1 from zero on the loss
    |v − c|²/2 (gradient v − c), h drawn as Algorithm 1's line 4 with the optimizer's seed."""
    J, p, seed, tau0 = 0.2, 3, 5, 4.0
    u, v = nn.Parameter(torch.zeros(3, dtype=torch.float64)), nn.Parameter(
        torch.zeros(2, dtype=torch.float64))
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    opt = build_optimizer("trivialized", [u, v], lr=1.0, coupling=J, p=p, num_spins=5.0,
                          tau0=tau0, seed=seed)
    h = J * math.sqrt(p * (p - 2)) * torch.randn(5, generator=torch.Generator().manual_seed(
        seed), dtype=torch.float64)
    for i, with_u in enumerate((False, True)):
        before = u.detach().clone(), v.detach().clone()
        u.grad = before[0].clone() if with_u else None        # the gradient of |u|²/2
        v.grad = before[1] - c
        opt.step()
        s = math.sqrt(2) * math.exp(-i / (2 * tau0))           # n = N: √2 e^{−i/(2τ₀)}
        want_u = before[0] - (before[0] + s * h[:3]) if with_u else before[0]
        torch.testing.assert_close(u.detach(), want_u, rtol=0, atol=1e-15)
        torch.testing.assert_close(v.detach(), before[1] - (before[1] - c + s * h[3:]),
                                   rtol=0, atol=1e-15)


def test_the_heuristics_count_the_trained_layers_and_weights_only():
    """§2.4.2's p and N describe the network being trained: a frozen layer (``requires_grad``
    off, e.g. a fixed feature extractor) is neither one of the p layers nor among the d
    weights. Four linear layers, the first frozen: p = 3, d = 5·5+5 + 5·5+5 + 5·2+2 = 72,
    N = (72/3)^{1/2}."""
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(),
                        nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 2))
    net[0].requires_grad_(False)
    h = trivialization_heuristics(net)
    assert h == {"p": 3, "num_spins": pytest.approx(math.sqrt(72 / 3)), "layers": 3}


@pytest.mark.parametrize("name", ["trivialized", "annealed-noise"])
def test_field_on_weights_keeps_the_weights_draws_only(name):
    # Algorithm 1 perturbs "weights of a deep network w" (thesis line 500): field_on="weights"
    # gives the biases (1-D tensors) no field, and the weight tensors the draws of "all"
    model, twin = tiny_mlp(seed=0), tiny_mlp(seed=0)
    every = build_optimizer_for(name, twin, lr=0.1, coupling=0.05, tau0=3.0, seed=2)
    opt = build_optimizer_for(name, model, lr=0.1, coupling=0.05, tau0=3.0, seed=2,
                              field_on="weights")
    keep = weight_tensor_mask(model.parameters())
    assert 0 < int(keep.sum()) < keep.numel()
    for i in range(3):
        for m, o in ((model, opt), (twin, every)):
            o.zero_grad()
            LOSS(m(X), Y).backward()
        g, theta = _grads(model), _flat(model)
        opt.step()
        every.step()
        s, h = opt.last_perturbation()
        torch.testing.assert_close(h, every.last_perturbation()[1] * keep)
        torch.testing.assert_close(_flat(model), theta - 0.1 * (g + s * h.float()))
    assert opt.settings()["field_on"] == "weights"
    with pytest.raises(ValueError, match="field_on"):
        build_optimizer_for(name, tiny_mlp(), lr=0.1, field_on="biases")


@pytest.mark.parametrize("name", ["trivialized", "annealed-noise"])
def test_field_on_weights_counts_the_weights_in_n(name):
    # §2.4.2's N := (# weights / p)^{1/2} counts the coordinates the field covers: under
    # field_on="weights" the weight tensors', the biases and batch norm left out, as from h
    net = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 5),
                        nn.ReLU(), nn.Linear(5, 2))
    weights = 3 * 5 + 5 * 5 + 5 * 2
    h = trivialization_heuristics(net, field_on="weights")
    assert h == {"p": 3, "num_spins": pytest.approx(math.sqrt(weights / 3)), "layers": 3}
    every = sum(q.numel() for q in net.parameters())
    assert trivialization_heuristics(net)["num_spins"] == pytest.approx(math.sqrt(every / 3))
    opt = build_optimizer_for(name, net, lr=0.1, seed=0, field_on="weights")
    assert opt.num_spins == opt.n == pytest.approx(math.sqrt(weights / 3))
    bare = build_optimizer(name, list(net.parameters()), lr=0.1, p=3, seed=0, field_on="weights")
    assert bare.num_spins == weights             # no model: N = d, the weights' count
    with pytest.raises(ValueError, match="field_on"):
        trivialization_heuristics(net, field_on="biases")


@pytest.mark.parametrize("name", ["trivialized", "annealed-noise"])
def test_a_state_loads_only_into_the_field_coverage_it_was_saved_with(name):
    # a state saved without field_on is read off its field: one drawn over every parameter
    # loads into field_on="all" as before, and is refused by "weights", whose h has no bias
    # part; one zero off the weights loads into "weights" only
    model = tiny_mlp(seed=0)
    every = build_optimizer_for(name, model, lr=0.1, seed=2)
    _run(model, every, 2)
    old = every.state_dict()
    del old["trivialized"]["field_on"]
    again = build_optimizer_for(name, model, lr=0.1, seed=2)
    again.load_state_dict(old)
    torch.testing.assert_close(again.field, every.field)
    weights = build_optimizer_for(name, model, lr=0.1, seed=2, field_on="weights")
    with pytest.raises(ValueError, match="field_on 'all', not 'weights'"):
        weights.load_state_dict(old)
    with pytest.raises(ValueError, match="field_on 'weights', not 'all'"):
        again.load_state_dict(weights.state_dict())
    twin = build_optimizer_for(name, model, lr=0.1, seed=5, field_on="weights")
    twin.load_state_dict(weights.state_dict())
    torch.testing.assert_close(twin.field, weights.field)
    unmarked = weights.state_dict()
    del unmarked["trivialized"]["field_on"]
    twin.load_state_dict(unmarked)
    with pytest.raises(ValueError, match="field_on 'weights', not 'all'"):
        again.load_state_dict(unmarked)


@pytest.mark.parametrize("name", ["trivialized", "annealed-noise"])
def test_field_on_weights_keeps_the_draws_over_groups_and_an_added_group(name):
    # two groups and one added later (the field grows by draws for the new group only):
    # "weights" is "all"'s h with the biases and batch-norm coordinates zeroed, step by step
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    ps = list(net.parameters())
    keep = weight_tensor_mask(ps)
    opts = [build_optimizer(name, [{"params": ps[:2]}, {"params": ps[2:4], "lr": 0.2}],
                            lr=0.1, p=3, seed=1, **kw) for kw in ({}, {"field_on": "weights"})]
    for o in opts:
        o.add_param_group({"params": ps[4:]})
    for _ in range(2):
        for o in opts:
            for q in ps:
                q.grad = torch.zeros_like(q)
            o.step()
        every, weights = (o.last_perturbation()[1] for o in opts)
        assert every.shape == keep.shape and bool(every[~keep].ne(0).all())
        assert torch.equal(weights, every * keep)


@pytest.mark.parametrize("saver,loader", [("trivialized", "annealed-noise"),
                                          ("annealed-noise", "trivialized")])
def test_a_state_loads_only_into_the_same_resampling(saver, loader):
    # one's state was taken by the other without a word, which then stepped its own rule on
    # the other's field; a state saved before the entry held resample loads as before
    model = tiny_mlp(seed=0)
    source = build_optimizer_for(saver, model, lr=0.1, seed=2)
    _run(model, source, 2)
    state = copy.deepcopy(source.state_dict())
    opt = build_optimizer_for(loader, model, lr=0.1, seed=2)
    with pytest.raises(ValueError, match=rf"^state_dict is for resample {source.resample}, not "
                                         rf"{opt.resample} \(a field redrawn every step"):
        opt.load_state_dict(state)
    # the same rule under the other name (resample given) takes it
    same = build_optimizer_for(loader, model, lr=0.1, seed=2, resample=source.resample)
    same.load_state_dict(state)
    torch.testing.assert_close(same.field, source.field)
    state["trivialized"].pop("resample")
    opt.load_state_dict(state)


@pytest.mark.parametrize("name", ["trivialized", "annealed-noise"])
@pytest.mark.parametrize("setting, other", [("coupling", 2e-3), ("p", 4), ("tau0", 10.0),
                                            ("n", 5.0), ("num_spins", 20.0)])
def test_a_state_loads_only_into_the_same_field_settings(name, setting, other):
    # the state held none of them: one built with another J, p, τ₀, n or N took the saved
    # field and stepped it at its own strength (or redrew it at its own scale), without a word
    model = tiny_mlp(seed=0)
    built = dict(lr=0.1, seed=2, coupling=1e-3, p=3, tau0=100.0, n=8.0, num_spins=10.0)
    source = build_optimizer_for(name, model, **built)
    _run(model, source, 2)
    state = copy.deepcopy(source.state_dict())
    opt = build_optimizer_for(name, model, **{**built, setting: other})
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=rf"^state_dict is for {setting} "
                                         rf"{float(built[setting])!r}, not {float(other)!r} "):
        opt.load_state_dict(state)
    assert opt._i == 0 and torch.equal(opt.state_dict()["trivialized"]["field"],
                                       before["trivialized"]["field"])
    # the same settings take it; a state saved before it held them loads as before
    same = build_optimizer_for(name, model, **built)
    same.load_state_dict(state)
    assert same._i == 2 and torch.equal(same.field, source.field)
    for key in ("coupling", "p", "tau0", "n", "num_spins"):
        state["trivialized"].pop(key)
    opt.load_state_dict(state)
    assert opt._i == 2 and getattr(opt, setting) == float(other)
