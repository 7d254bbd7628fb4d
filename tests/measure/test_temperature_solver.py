"""Temperatures and the solver that keeps one fixed."""
import pytest

from sgdlab.measure.noise import minibatch_noise_factor
from sgdlab.measure.temperature import (
    KINDS, beta_inv, musso_temperature, round_batch_size, solve_batch_size, solve_lr, temperature,
    temperatures,
)


def test_values():
    assert temperature("eta_over_b", 0.1, 128) == pytest.approx(0.1 / 128)
    assert beta_inv(0.1, 128) == pytest.approx(0.1 / 256)
    assert beta_inv(0.1, 100, 1000) == pytest.approx(0.1 / 200 * 0.9)
    assert musso_temperature(0.1, 128, 0.9) == pytest.approx(0.1 / (6 * 128 * 0.1))
    t = temperatures(0.1, 128, momentum=0.9, dataset_size=1000, mean_eigenvalue=2.0)
    assert t["thesis"] == pytest.approx(0.1 / 128 * 2.0)
    # the thesis factor vs the exact finite-population one differ by N/(N-1)
    n, b = 1000, 100
    assert minibatch_noise_factor(b, n, replacement=False) == pytest.approx(
        (1 - b / n) / b * n / (n - 1))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [None, 5000])
def test_round_trips(kind, n):
    kw = dict(momentum=0.9, dataset_size=n, mean_eigenvalue=0.5)
    t = temperature(kind, 0.1, 128, **kw)
    lr2 = solve_lr(kind, t, 512, **kw)
    assert temperature(kind, lr2, 512, **kw) == pytest.approx(t)
    b2 = solve_batch_size(kind, t, 0.4, **kw)
    assert temperature(kind, 0.4, b2, **kw) == pytest.approx(t)


@pytest.mark.parametrize("b, want", [
    (127.49, 127), (127.51, 128), (3.0, 3),
    # half-way rounds up, not to even as round() would (round(2.5) == 2)
    (2.5, 3), (127.5, 128), (0.5, 1),
    # at least 1, however small the solved batch size
    (0.49, 1), (0.0, 1), (1e-9, 1),
])
def test_round_batch_size_is_the_nearest_integer_at_least_one(b, want):
    got = round_batch_size(b)
    assert type(got) is int and got == want


def test_errors():
    with pytest.raises(ValueError, match="momentum"):
        musso_temperature(0.1, 10, 1.0)
    with pytest.raises(ValueError, match="Unknown temperature"):
        temperature("kelvin", 0.1, 10)
    with pytest.raises(ValueError, match="mean eigenvalue"):
        temperature("thesis", 0.1, 10)
    with pytest.raises(ValueError, match="zero"):
        solve_lr("beta_inv", 1e-3, 100, dataset_size=100)
    for target in (0.0, -1.0):
        with pytest.raises(ValueError, match="target temperature"):
            solve_lr("musso", target, 10)
    with pytest.raises(ValueError, match="no batch size matches"):
        solve_batch_size("thesis", 1e-3, 0.1, mean_eigenvalue=0.0)


def test_cli_solves_and_reports(capsys):
    from sgdlab.cli.main import main

    assert main(["temperature", "--lr", "0.1", "--batch-size", "128", "--match-lr", "512",
                 "--keep", "eta_over_b"]) == 0
    out = capsys.readouterr().out
    assert "eta_over_b" in out and "batch size 512 -> lr 0.4" in out
    assert main(["temperature", "--lr", "0.1", "--batch-size", "128", "--momentum", "0.9",
                 "--match-batch-size", "0.05", "--keep", "musso"]) == 0
    assert "lr 0.05 -> batch size 64" in capsys.readouterr().out
    assert main(["temperature", "--lr", "0.1", "--batch-size", "128", "--momentum", "1.0"]) == 2
    assert "momentum" in capsys.readouterr().err
    # --keep steers the solve: without one, or without the eigenvalue it needs, it is refused
    # in one line before any output, never silently ignored; so is a new value out of range
    for extra, says in ((["--keep", "musso"], "--keep musso picks the temperature that"),
                        (["--keep", "thesis", "--match-lr", "256"], "--keep thesis needs"),
                        (["--match-lr", "0"], "--match-lr takes the new batch size, >= 1"),
                        (["--match-batch-size", "-1"], "--match-batch-size takes the new")):
        assert main(["temperature", "--lr", "0.1", "--batch-size", "128", *extra]) == 2
        out, err = capsys.readouterr()
        assert out == "" and says in err


def test_cli_never_answers_a_batch_size_beyond_the_dataset(capsys):
    """With --dataset-size N, every kept temperature's matched batch size is at most N, as the
    solver's own check says (it answered 1280 of 1000 samples for every kind but β⁻¹, whose
    formula alone saw N); a new batch size beyond N is refused before any output."""
    from sgdlab.cli.main import main

    base = ["temperature", "--lr", "0.1", "--batch-size", "128", "--dataset-size", "1000"]
    for kind in ("eta_over_b", "musso", "musso-mean-lr"):
        assert main([*base, "--match-batch-size", "1.0", "--keep", kind]) == 2
        out, err = capsys.readouterr()
        assert "1280" in err and "dataset size 1000" in err and "-> batch size" not in out
    assert main([*base, "--match-batch-size", "0.5", "--keep", "eta_over_b"]) == 0
    assert "lr 0.5 -> batch size 640" in capsys.readouterr().out
    for kind in ("eta_over_b", "beta_inv"):
        assert main([*base, "--match-lr", "2000", "--keep", kind]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "--match-lr 2000" in err and "1000" in err


def test_musso_eq19_in_the_papers_terms():
    # eq. (19): T = l D / (6 C (1 − μ)), l the maximal learning rate, D of eq. (8)
    assert musso_temperature(0.1, 128, 0.9, diffusion=2.0) == pytest.approx(
        0.1 * 2.0 / (6 * 128 * (1 - 0.9)))
    # the mean-lr alias: lr is the mean ⟨η⟩ = l/2, so T = ⟨η⟩ D / (3 C (1 − μ))
    assert musso_temperature(0.05, 128, 0.9, convention="mean-lr") == pytest.approx(
        musso_temperature(0.1, 128, 0.9)) == pytest.approx(0.05 / (3 * 128 * 0.1))
    assert temperature("musso-mean-lr", 0.05, 128, momentum=0.9) == pytest.approx(
        temperature("musso", 0.1, 128, momentum=0.9))
    t = temperatures(1e-4, 30)
    assert t["musso-mean-lr"] == pytest.approx(2 * t["musso"])


def test_musso_equal_temperature_pairs_of_the_figures():
    T = musso_temperature
    # Fig. 5: C = 60, l = 2e-4 vs C = 30, l = 1e-4, zero momentum; C = 60, l = 1e-4 has half T
    assert T(2e-4, 60) == pytest.approx(T(1e-4, 30)) == pytest.approx(2 * T(1e-4, 60))
    # Fig. 6 left: l = 0.005 (the top of U[0, 0.005]), C = 60 with μ = 0.75 vs C = 30, μ = 0.5
    assert T(0.005, 60, 0.75) == pytest.approx(T(0.005, 30, 0.5))
    # Fig. 6 right: average learning rates 2.5e-4 at C = 128 and 5e-4 at C = 256, μ = 0.9
    assert T(2.5e-4, 128, 0.9, convention="mean-lr") == pytest.approx(
        T(5e-4, 256, 0.9, convention="mean-lr"))
    assert solve_lr("musso", T(2e-4, 60), 30) == pytest.approx(1e-4)
    assert solve_batch_size("musso", T(0.005, 60, 0.75), 0.005, momentum=0.5) == pytest.approx(30)


def test_musso_eq19_read_with_the_average_rate_of_the_abstract_and_section_3_3():
    # line 142: eq. (19) "depends on the (maximal) learning rate l"; the abstract (line 19),
    # the introduction (line 48) and §3.3 (line 226) say the temperature depends on the
    # average learning rate: T = ⟨η⟩ D / (6 C (1 − μ)), half the maximal reading's
    assert musso_temperature(0.05, 128, 0.9, diffusion=2.0, convention="mean-lr",
                             eq19_l="average") == pytest.approx(0.05 * 2.0 / (6 * 128 * 0.1))
    assert musso_temperature(0.1, 128, 0.9, eq19_l="average") == pytest.approx(
        musso_temperature(0.1, 128, 0.9) / 2)
    assert musso_temperature(0.05, 128, 0.9, convention="mean-lr", eq19_l="maximal") == \
        pytest.approx(2 * musso_temperature(0.05, 128, 0.9, convention="mean-lr",
                                            eq19_l="average"))
    # the figures' pairs stay at equal T under either reading (only ratios enter)
    T = musso_temperature
    assert T(2e-4, 60, eq19_l="average") == pytest.approx(T(1e-4, 30, eq19_l="average"))
    assert T(0.005, 60, 0.75, eq19_l="average") == pytest.approx(
        T(0.005, 30, 0.5, eq19_l="average"))
    with pytest.raises(ValueError, match="eq19_l 'mean'.*maximal, average"):
        T(0.1, 10, eq19_l="mean")


def test_musso_bad_convention_or_diffusion():
    with pytest.raises(ValueError, match="convention"):
        musso_temperature(0.1, 10, convention="max")
    with pytest.raises(ValueError, match="diffusion"):
        musso_temperature(0.1, 10, diffusion=0.0)


def test_cli_musso_pair_of_fig5(capsys):
    from sgdlab.cli.main import main

    assert main(["temperature", "--lr", "2e-4", "--batch-size", "60", "--match-lr", "30",
                 "--keep", "musso"]) == 0
    out = capsys.readouterr().out
    assert "batch size 30 -> lr 0.0001" in out
    assert f"{2e-4 / 360:.6g}" in out and "musso-mean-lr" in out


def test_thesis_temperature_is_eq_6_45_at_remark_6_37s_noise_scale():
    """Remark 6.39, eq. (6.45): (η/ℓ) · (1/d) Σ_{k=1}^d λ_k(D), D of eq. (6.4) (the printed η/β
    is η/ℓ, docs/FIDELITY.md), i.e. Remark 6.37's noise variance ηD/ℓ = 2β⁻¹D (β⁻¹ of eq. 6.6)
    averaged over all d directions. D from four per-sample gradients written out (loss_k(w) =
    w · g_k, so ∇f_k = g_k), its eigenvalues by numpy; the mean eigenvalue as sgdlab measures
    it, Tr D / d of ``diffusion_matrix``."""
    import numpy as np
    import torch

    from sgdlab.measure.noise import diffusion_matrix
    from sgdlab.measure.temperature import thesis_temperature

    g = np.array([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [0.0, 1.5, -1.0], [-0.5, 0.5, 1.0]])
    d_mat = g.T @ g / len(g) - np.outer(g.mean(0), g.mean(0))
    mean_eig = float(np.linalg.eigvalsh(d_mat).mean())
    model = torch.nn.Linear(3, 1, bias=False).double()
    x = torch.tensor(g)
    measured = diffusion_matrix(model, lambda out, y: out.squeeze(-1).mean(),
                                (x, torch.zeros(len(x))))
    assert measured.trace() / measured.dim == pytest.approx(mean_eig, rel=1e-13)
    lr, b = 0.05, 16
    assert thesis_temperature(lr, b, mean_eig) == pytest.approx(lr / b * mean_eig, rel=1e-15)
    assert thesis_temperature(lr, b, mean_eig) == pytest.approx(2 * beta_inv(lr, b) * mean_eig,
                                                               rel=1e-15)
    assert temperature("thesis", lr, b, mean_eigenvalue=mean_eig) == \
        thesis_temperature(lr, b, mean_eig)


@pytest.mark.parametrize("b", [1, 2, 4])
def test_beta_inv_without_replacement_is_eq_6_7_and_goes_with_eq_6_5s_d_wo(b):
    """Theorem 6.5: the SDE's noise over one step, η · 2β⁻¹ D, is η² times the variance of the
    mini-batch gradient. With replacement β⁻¹ = η/(2ℓ) (6.6) and D_w of (6.4); without,
    β_wo⁻¹ = η/(2ℓ)(1 − ℓ/N) (6.7) and D_wo = N/(N − 1) D_w (6.5 as its proof gives it): every
    mini-batch of six written-out gradients enumerated."""
    import torch

    from sgdlab.testing import minibatch_covariance_enumerated

    g = torch.tensor([[1.0, 0.0], [0.5, -1.0], [0.0, 1.5], [-0.5, 0.5], [2.0, 1.0],
                      [-1.0, -0.5]], dtype=torch.float64)
    n, lr = len(g), 0.1
    c = g - g.mean(0)
    d_w = c.T @ c / n
    for replacement, beta, d in ((True, beta_inv(lr, b), d_w),
                                 (False, beta_inv(lr, b, n), n / (n - 1) * d_w)):
        assert beta == pytest.approx(lr / (2 * b) * (1 if replacement else 1 - b / n))
        exact = minibatch_covariance_enumerated(g, b, replacement=replacement)
        torch.testing.assert_close(2 * beta * d, lr * exact, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("args,match", [
    # eq. (3): μ ∈ [0, 1) makes the friction γ = (1 − μ)/l positive; μ < 0 is no momentum
    ((0.1, 128, -0.5), "Invalid momentum value: -0.5"),
    # T is linear in l and l D / (6 C (1 − μ)) at l = 0 is no temperature to compare by
    ((0.0, 128, 0.9), "Invalid learning rate: 0.0"),
    # C = inf gave T = 0 (and solving for l then divided by it)
    ((0.1, float("inf"), 0.9), "Invalid batch size: inf"),
])
def test_musso_refuses_hyper_parameters_outside_eq_19s_domain(args, match):
    with pytest.raises(ValueError, match=match):
        musso_temperature(*args)
    lr, batch, mu = args
    with pytest.raises(ValueError, match=match):
        temperature("musso", lr, batch, momentum=mu)
