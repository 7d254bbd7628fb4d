"""Temperatures and the solver that keeps one fixed."""
import pytest

from sgdlab.measure.noise import minibatch_noise_factor
from sgdlab.measure.temperature import (
    KINDS, beta_inv, musso_temperature, solve_batch_size, solve_lr, temperature, temperatures,
)


def test_values():
    assert temperature("eta_over_b", 0.1, 128) == pytest.approx(0.1 / 128)
    assert beta_inv(0.1, 128) == pytest.approx(0.1 / 256)
    assert beta_inv(0.1, 100, 1000) == pytest.approx(0.1 / 200 * 0.9)
    assert musso_temperature(0.1, 128, 0.9) == pytest.approx(0.1 / (2 * 128 * 0.1))
    assert musso_temperature(0.1, 128) == beta_inv(0.1, 128)
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


def test_errors():
    with pytest.raises(ValueError, match="momentum"):
        musso_temperature(0.1, 10, 1.0)
    with pytest.raises(ValueError, match="Unknown temperature"):
        temperature("kelvin", 0.1, 10)
    with pytest.raises(ValueError, match="mean eigenvalue"):
        temperature("thesis", 0.1, 10)
    with pytest.raises(ValueError, match="zero"):
        solve_lr("beta_inv", 1e-3, 100, dataset_size=100)


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
