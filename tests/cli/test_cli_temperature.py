"""``sgdlab temperature --match-*`` without ``--keep``: every temperature that can be kept."""
from __future__ import annotations

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
