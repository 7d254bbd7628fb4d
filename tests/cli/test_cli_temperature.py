"""``sgdlab temperature --match-*`` without ``--keep``: every temperature that can be kept."""
from __future__ import annotations

import math

import pytest

from sgdlab.cli.main import main

BASE = ["temperature", "--lr", "0.1", "--batch-size", "128", "--dataset-size", "1000"]


def test_the_kept_beta_inv_is_named_as_the_value_it_keeps(capsys):
    # "keep beta_inv: ... -> lr 0.234409" kept the line beta_inv_without_replacement, not
    # beta_inv = η/(2B), which lr 0.2 keeps
    assert main([*BASE, "--match-lr", "256"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "keep beta_inv_without_replacement: batch size 256 -> lr 0.234409" in out
    assert "keep eta_over_b: batch size 256 -> lr 0.2" in out
    assert not any(line.startswith("keep beta_inv:") for line in out)


def test_a_temperature_that_cannot_be_kept_leaves_the_others_answered(capsys):
    # the first one beyond the dataset stopped the command: exit 2, the others unanswered,
    # where --keep's help promises "every computable one"
    assert main([*BASE, "--match-batch-size", "1"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert ("keep eta_over_b: none (matching needs batch size 1280.0 > dataset size 1000)"
            in out.splitlines())
    assert "keep beta_inv_without_replacement: lr 1 -> batch size 595 (exact 594.8;" in out


def test_an_infinite_learning_rate_or_batch_size_is_refused(capsys):
    # --lr inf printed inf for every temperature; --match-batch-size inf answered each kind
    # with "none (Invalid learning rate: inf ...)"
    for argv, message in (
            (["--lr", "inf", "--batch-size", "4"], "Invalid learning rate: inf (must be finite"),
            (["--lr", "0.1", "--batch-size", "4", "--mean-eig", "inf"],
             "Invalid mean eigenvalue inf (must be finite and >= 0)"),
            (["--lr", "0.1", "--batch-size", "4", "--match-batch-size", "inf"],
             "--match-batch-size takes the new learning rate, finite and > 0; got inf")):
        assert main(["temperature", *argv]) == 2
        assert message in capsys.readouterr().err


def _printed(out: str) -> dict[str, float]:
    """The temperature lines ``  name value`` of the command's output."""
    return {parts[0]: float(parts[1]) for line in out.splitlines()
            if line.startswith("  ") and len(parts := line.split()) == 2}


def test_musso_temperatures_are_eq_19_with_the_momentum_given(capsys):
    """Musso eq. (19) with D = 1, T = l / (6 C (1 − μ)), computed by hand: at Fig. 6's
    (l = 0.005, C = 60, μ = 0.75) and (C = 30, μ = 0.5) both are 0.005 / 90; ``musso-mean-lr``
    reads --lr as the mean rate, l = 2·lr."""
    for batch, mu in ((60, 0.75), (30, 0.5)):
        assert main(["temperature", "--lr", "0.005", "--batch-size", str(batch),
                     "--momentum", str(mu)]) == 0
        got = _printed(capsys.readouterr().out)
        t = 0.005 / (6.0 * batch * (1.0 - mu))
        assert t == 0.005 / 90.0
        assert got["musso"] == pytest.approx(t, rel=1e-5)
        assert got["musso-mean-lr"] == pytest.approx(2 * t, rel=1e-5)
        assert got["eta_over_b"] == pytest.approx(0.005 / batch, rel=1e-5)   # no μ in η/B


def test_keeping_musso_solves_eq_19_for_the_other_hyper_parameter(capsys):
    """Fig. 5: (l = 2e-4, C = 60) and (l = 1e-4, C = 30) share eq. (19)'s T at μ = 0; with
    μ = 0.9 on both sides, l / C is kept all the same (l′ = 0.1 · 256/128)."""
    assert main(["temperature", "--lr", "2e-4", "--batch-size", "60", "--match-lr", "30",
                 "--keep", "musso"]) == 0
    assert "keep musso: batch size 30 -> lr 0.0001" in capsys.readouterr().out.splitlines()
    assert main(["temperature", "--lr", "2e-4", "--batch-size", "60",
                 "--match-batch-size", "1e-4", "--keep", "musso-mean-lr"]) == 0
    # T = 2·lr / (6 C) at both: 2 · 2e-4 / 360 = 2 · 1e-4 / 180 = 1.11111e-06
    assert ("keep musso-mean-lr: lr 0.0001 -> batch size 30 (exact 30; temperature 1.11111e-06"
            " vs 1.11111e-06)") in capsys.readouterr().out.splitlines()
    assert main(["temperature", "--lr", "0.1", "--batch-size", "128", "--momentum", "0.9",
                 "--match-lr", "256", "--keep", "musso"]) == 0
    assert "keep musso: batch size 256 -> lr 0.2" in capsys.readouterr().out.splitlines()


def test_a_new_batch_size_equal_to_the_dataset_size_is_accepted(capsys):
    # the full batch is a batch size (only one beyond N is refused); eq. (19) keeps l / C:
    # l' = 0.1 · 1000 / 128
    assert main([*BASE, "--match-lr", "1000", "--keep", "musso"]) == 0
    assert "keep musso: batch size 1000 -> lr 0.78125" in capsys.readouterr().out.splitlines()


def _kept(out: str) -> dict[str, tuple[float, ...]]:
    """The numbers of each ``keep NAME: ...`` line: (new lr,) for --match-lr, (batch size,
    exact, achieved temperature, target) for --match-batch-size."""
    import re

    lines = {m[1]: m[2] for m in re.finditer(r"^keep (\S+): (.*)$", out, re.M)}
    pattern = re.compile(r"batch size \d+ -> lr (\S+)$|lr \S+ -> batch size (\d+) \(exact "
                         r"(\S+); temperature (\S+) vs (\S+)\)$")
    return {k: tuple(float(v) for v in pattern.fullmatch(line).groups() if v is not None)
            for k, line in lines.items()}


def test_every_temperature_and_match_is_the_closed_form(capsys):
    """At η = 0.1, B = 128, N = 1000, μ = 0.9, Tr D / d = 0.5, each printed temperature is its
    formula (η/B; β⁻¹ = η/(2B) and ×(1 − B/N); Musso's l/(6C(1 − μ)) and 2× for the mean rate;
    the thesis' (η/B)·Tr D/d), and each match solves that formula: at B′ = 256 the lr, at
    η′ = 0.07 the batch size, rounded, with the temperature it reaches there."""
    lr, b, n, mu, m = 0.1, 128, 1000, 0.9, 0.5
    base = ["temperature", "--lr", str(lr), "--batch-size", str(b), "--dataset-size", str(n),
            "--momentum", str(mu), "--mean-eig", str(m)]
    closed = {"eta_over_b": lambda lr, b: lr / b, "beta_inv": lambda lr, b: lr / (2 * b),
              "beta_inv_without_replacement": lambda lr, b: lr / (2 * b) * (1 - b / n),
              "musso": lambda lr, b: lr / (6 * b * (1 - mu)),
              "musso-mean-lr": lambda lr, b: 2 * lr / (6 * b * (1 - mu)),
              "thesis": lambda lr, b: lr / b * m}
    assert main(base) == 0
    got = _printed(capsys.readouterr().out)
    assert set(got) == set(closed)
    for name, t in closed.items():
        assert got[name] == pytest.approx(t(lr, b), rel=1e-5), name
    kept = {"eta_over_b", "beta_inv_without_replacement", "musso", "musso-mean-lr", "thesis"}
    assert main([*base, "--match-lr", "256"]) == 0
    lines = _kept(capsys.readouterr().out)
    assert set(lines) == kept
    for name in kept:
        new_lr = (lr * 256 / b * (1 - b / n) / (1 - 256 / n)
                  if name == "beta_inv_without_replacement" else lr * 256 / b)
        assert lines[name] == pytest.approx((new_lr,), rel=1e-5), name
    assert main([*base, "--match-batch-size", "0.07"]) == 0
    lines = _kept(capsys.readouterr().out)
    assert set(lines) == kept
    for name in kept:
        target = closed[name](lr, b)
        exact = (0.07 * n / (2 * target * n + 0.07) if name == "beta_inv_without_replacement"
                 else 0.07 * b / lr)
        rounded = math.floor(exact + 0.5)
        assert lines[name] == pytest.approx(
            (rounded, exact, closed[name](0.07, rounded), target), rel=1e-3), name
        assert rounded != exact     # the rounded batch size misses the target a little


def test_the_kept_beta_inv_without_a_dataset_size_is_eta_over_2b(capsys):
    assert main(["temperature", "--lr", "0.1", "--batch-size", "128", "--match-lr",
                 "256"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "keep beta_inv: batch size 256 -> lr 0.2" in out
    assert not any("thesis" in line for line in out)     # no --mean-eig: nothing to keep


@pytest.mark.parametrize("argv, message", [
    (["--keep", "musso"], "--keep musso picks the temperature that --match-lr or "
                          "--match-batch-size keeps: give one of them"),
    (["--match-lr", "0"], "--match-lr takes the new batch size, >= 1; got 0"),
    (["--match-batch-size", "0"], "--match-batch-size takes the new learning rate, finite "
                                  "and > 0; got 0"),
    (["--match-lr", "256", "--keep", "thesis"], "--keep thesis needs --mean-eig"),
    (["--dataset-size", "1000", "--match-batch-size", "1", "--keep", "eta_over_b"],
     "eta_over_b: matching needs batch size 1280.0 > dataset size 1000"),
])
def test_a_match_that_cannot_be_made_is_refused_with_exit_2(capsys, argv, message):
    assert main(["temperature", "--lr", "0.1", "--batch-size", "128", *argv]) == 2
    assert capsys.readouterr().err == f"sgdlab: error: {message}\n"


def test_the_mean_eigenvalue_names_the_scalar_sgdlab_measure_prints(capsys):
    # "measured mean eigenvalue Tr D / d" named neither D = Σ nor where to read it
    with pytest.raises(SystemExit):
        main(["temperature", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "D = Σ (thesis): noise/mean_eig, as `sgdlab measure RUN` prints it" in help_text
