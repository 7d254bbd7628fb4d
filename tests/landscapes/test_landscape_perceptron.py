"""Binary perceptron teacher–student (thesis §3.1.1)."""
import math

import pytest
import torch

from sgdlab.errors import UserError
from sgdlab.landscapes.perceptron import (PerceptronInstances, anneal, coupling_energy,
                                          coupling_flip_change, generalization_error)


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
