"""Binary perceptron teacher–student (thesis §3.1.1)."""
import math

import pytest
import torch

from sgdlab.errors import UserError
from sgdlab.landscapes.perceptron import (PerceptronInstances, anneal, compare_searches,
                                          coupling_energy, coupling_flip_change,
                                          generalization_error)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_generalization_error_is_disagreement_probability():
    gen = torch.Generator().manual_seed(0)
    d = 401
    teacher = torch.randint(0, 2, (d,), generator=gen).float() * 2 - 1
    student = teacher.clone()
    student[:120] *= -1                                  # R = (401 − 240)/401
    r = (student @ teacher) / d
    assert float(generalization_error(student, teacher)) == pytest.approx(math.acos(r) / math.pi)
    assert float(generalization_error(teacher, teacher)) == 0.0
    assert float(generalization_error(-teacher, teacher)) == pytest.approx(1.0)
    pats = torch.randint(0, 2, (40000, d), generator=gen).float() * 2 - 1
    disagree = (torch.sign(pats @ student) != torch.sign(pats @ teacher)).float().mean()
    assert float(disagree) == pytest.approx(math.acos(r) / math.pi, abs=0.01)


def test_instances_and_plain_search_solve_easy_training_sets():
    gen = torch.Generator().manual_seed(1)
    inst = PerceptronInstances.sample(3, 51, 0.3, generator=gen)
    assert (inst.train_errors(inst.teacher[:, None]) == 0).all()
    x = anneal(inst, replicas=3, sweeps=40, generator=gen)
    assert x.shape == (3, 3, 51) and set(x.unique().tolist()) <= {-1.0, 1.0}
    # direct count for the returned replicas
    h = torch.einsum("bnd,bad->ban", inst.patterns, x)
    assert torch.equal(inst.train_errors(x), (h * inst.labels[:, None] < 0).sum(-1))
    assert inst.train_errors(x).float().mean() <= 0.5


def test_plain_search_at_a_fixed_temperature_samples_the_gibbs_law_of_the_errors():
    """With β fixed (β = (1, 1)) and no coupling, the Metropolis chain's stationary law is
    P(x) ∝ exp(−β E(x)), E = number of misclassified patterns: on one d = 3 instance (all 8
    configurations, E from 0 to 3) copied 3,000 times, the frequencies of the final replicas
    are each within 5 standard errors of the exact law (at 2β, P(E = 0) moves by 46 of them)."""
    import itertools

    teacher = torch.ones(3)
    patterns = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]])
    b = 3000
    inst = PerceptronInstances(teacher.expand(b, 3), patterns.expand(b, 3, 3),
                               torch.sign(patterns @ teacher).expand(b, 3))
    x = anneal(inst, replicas=2, sweeps=30, beta=(1.0, 1.0),
               generator=torch.Generator().manual_seed(0)).reshape(-1, 3)
    configs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=3)))
    energy = ((configs @ patterns.T) < 0).sum(-1).double()          # labels are all +1
    assert sorted(set(energy.tolist())) == [0.0, 1.0, 2.0, 3.0]
    law = torch.softmax(-energy, 0)
    freq = (x[:, None, :] == configs[None]).all(-1).double().mean(0)
    se = (law * (1 - law) / len(x)).sqrt()
    assert bool(((freq - law).abs() < 5 * se).all()), (freq, law)


def test_bad_input():
    with pytest.raises(UserError):
        PerceptronInstances.sample(2, 50, 0.5)
    with pytest.raises(UserError):
        PerceptronInstances.sample(2, 51, 0.0)


def test_the_coupling_of_a_flip_is_the_change_of_the_documented_energy():
    """anneal's Metropolis step uses the change of −(γ/y) Σ_{a<b} x^a·x^b, checked against the
    pairwise sum written out, for every replica and coordinate of a random configuration."""
    g = torch.Generator().manual_seed(0)
    y, d, gamma = 5, 11, 0.7
    x = torch.randint(0, 2, (y, d), generator=g).double() * 2 - 1
    pairs = -(gamma / y) * sum(float(x[a] @ x[b]) for a in range(y) for b in range(a + 1, y))
    assert float(coupling_energy(x, gamma)) == pytest.approx(pairs, abs=1e-12)
    c = x.sum(0)
    for a in range(y):
        for i in range(d):
            flipped = x.clone()
            flipped[a, i] *= -1
            change = coupling_energy(flipped, gamma) - coupling_energy(x, gamma)
            assert float(coupling_flip_change(gamma, y, x[a, i], c[i])) == pytest.approx(
                float(change), abs=1e-12)


@pytest.mark.parametrize("kw, match", [
    (dict(beta=(0.0, 6.0)), "beta"), (dict(beta=(-1.0, 6.0)), "beta"),
    (dict(gamma_max=float("nan")), "gamma_max"), (dict(sweeps=2.5), "sweeps"),
], ids=["beta-zero", "beta-negative", "gamma-nan", "sweeps-frac"])
def test_bad_annealing_schedules_are_named_errors(kw, match):
    # β₀ = 0 divided by zero, β₀ < 0 failed on a complex power, γ = NaN rejected every flip
    # (the replicas stayed at their random start), a fractional sweep count was a TypeError
    inst = PerceptronInstances.sample(2, 11, 0.5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(UserError, match=match):
        anneal(inst, **kw)
    with pytest.raises(UserError, match="alpha"):
        PerceptronInstances.sample(2, 11, float("nan"))


@pytest.mark.parametrize("args, match", [
    ((1.5, 5, 1.0), "batch must be an integer >= 1"),
    ((0, 5, 1.0), "batch must be an integer >= 1"),
    ((2, 5.5, 1.0), "d must be an odd integer >= 3"),
])
def test_instance_sizes_are_checked_by_name(args, match):
    # fractional sizes were TypeErrors from torch.randint, batch 0 gave empty instances
    with pytest.raises(UserError, match=match):
        PerceptronInstances.sample(*args)


def test_a_whole_float_dimension_is_taken():
    inst = PerceptronInstances.sample(2, 5.0, 1.0, generator=torch.Generator().manual_seed(0))
    assert inst.teacher.shape == (2, 5) and inst.patterns.shape == (2, 5, 5)


def _anneal_by_hand(inst, replicas, sweeps, beta, gamma_max, seed):
    """:func:`anneal` written out replica by replica in float64, from the same draws (the
    start, then per step a coordinate and a uniform per replica): each replica proposes to
    flip its coordinate i given the configuration before the step (all replicas move at
    once), Δ = ΔE + the change of −(γ/y) Σ_{a<b} x^a·x^b (pairs summed out), accepted when
    Δ ≤ 0 or u < exp(−β Δ); β geometric from β₀ to β₁, γ linear from 0 over the steps."""
    gen = torch.Generator().manual_seed(seed)
    b, n, d = inst.patterns.shape
    x = torch.randint(0, 2, (b, replicas, d), generator=gen).double() * 2 - 1
    total = sweeps * d

    def energy(k, conf, g):         # errors of every replica plus the pairwise coupling
        errs = sum(int(((inst.patterns[k] @ conf[a]) * inst.labels[k] < 0).sum())
                   for a in range(replicas))
        pairs = sum(float(conf[a] @ conf[c]) for a in range(replicas)
                    for c in range(a + 1, replicas))
        return errs - g / replicas * pairs

    flips = 0
    for step in range(total):
        frac = step / (total - 1)
        beta_t, gamma_t = beta[0] * (beta[1] / beta[0]) ** frac, gamma_max * frac
        i = torch.randint(0, d, (b, replicas), generator=gen)
        u = torch.rand((b, replicas), generator=gen).double()
        new = x.clone()
        for k in range(b):
            for a in range(replicas):
                moved = x[k].clone()
                moved[a, i[k, a]] *= -1
                delta = energy(k, moved, gamma_t) - energy(k, x[k], gamma_t)
                if delta <= 0 or u[k, a] < math.exp(-beta_t * delta):
                    new[k, a, i[k, a]] *= -1
                    flips += 1
        x = new
    return x, flips


@pytest.mark.parametrize("batch,sweeps,beta", [(2, 8, (0.5, 3.0)), (48, 1, (0.2, 5.0))],
                         ids=["long", "wide"])
def test_annealing_with_coupling_is_the_documented_metropolis_rule_by_hand(batch, sweeps, beta):
    """Two instances over 8 sweeps, and 48 over one sweep (5 steps, β from 0.2 to 5.0: where
    the schedule's end points decide many moves)."""
    inst = PerceptronInstances.sample(batch, 5, 0.8, generator=torch.Generator().manual_seed(0))
    inst.to(dtype=torch.float64)
    kw = dict(replicas=3, sweeps=sweeps, beta=beta)
    x = anneal(inst, gamma_max=1.5, generator=torch.Generator().manual_seed(4), **kw)
    want, flips = _anneal_by_hand(inst, gamma_max=1.5, seed=4, **kw)
    assert torch.equal(x, want)
    assert 0 < flips < batch * 3 * sweeps * 5            # some moves taken, some refused
    plain = anneal(inst, gamma_max=0.0, generator=torch.Generator().manual_seed(4), **kw)
    assert not torch.equal(plain, x)                      # the coupling changed the run


def test_the_number_of_patterns_is_alpha_d_rounded():
    assert PerceptronInstances.sample(1, 7, 0.5).patterns.shape == (1, 4, 7)     # 3.5 -> 4
    assert PerceptronInstances.sample(1, 5, 0.3).patterns.shape == (1, 2, 5)     # 1.5 -> 2


def test_compare_searches_by_hand():
    """The errors, their standard errors over instances (std/√B) and the training errors of
    the three searches, from the same draws as compare_searches makes them."""
    kw = dict(replicas=3, sweeps=3)
    got = compare_searches(d=7, alphas=(1.5,), instances=4, gamma_max=1.0, seed=1, **kw)
    gen = torch.Generator().manual_seed(1)
    inst = PerceptronInstances.sample(4, 7, 1.5, generator=gen)
    plain = anneal(inst, generator=gen, **kw)
    coupled = anneal(inst, gamma_max=1.0, generator=gen, **kw)
    t = inst.teacher
    centre = lambda x: torch.where(x.sum(1) >= 0, 1.0, -1.0)  # noqa: E731
    eps = {"plain": generalization_error(plain, t[:, None]).mean(1),
           "plain centre": generalization_error(centre(plain), t),
           "local entropy": generalization_error(centre(coupled), t)}
    errs = {"plain": inst.train_errors(plain).float().mean(1),
            "plain centre": inst.train_errors(centre(plain)[:, None])[:, 0].float(),
            "local entropy": inst.train_errors(centre(coupled)[:, None])[:, 0].float()}
    for name in eps:
        assert got["errors"][name] == [pytest.approx(float(eps[name].mean()), abs=1e-7)]
        assert got["stderr"][name] == [pytest.approx(float(eps[name].std() / 2), abs=1e-7)]
        assert got["train_errors"][name] == [pytest.approx(float(errs[name].mean()), abs=1e-7)]
    for what in ("errors", "train_errors"):                 # the three searches differ
        assert len({round(got[what][k][0], 6) for k in eps}) == 3
