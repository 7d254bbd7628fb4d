"""Temperatures at their edges, by hand: the table of all of them with a dataset size, and a
temperature matched by the full batch."""
import pytest

from sgdlab.measure.temperature import solve_batch_size, temperatures


def test_the_table_holds_beta_inv_with_and_without_replacement():
    # η = 0.1, B = 100, N = 1000: η/(2B) = 5e-4, times (1 − B/N) = 0.9 without replacement
    t = temperatures(0.1, 100, dataset_size=1000)
    assert t["beta_inv"] == pytest.approx(5e-4, rel=1e-15)
    assert t["beta_inv_without_replacement"] == pytest.approx(4.5e-4, rel=1e-15)
    assert "beta_inv_without_replacement" not in temperatures(0.1, 100)


def test_the_full_batch_is_a_batch_size_that_matches():
    # η/B = 2⁻⁸ at η = 1/2 is B = 128 = N exactly: the whole dataset, no more
    assert solve_batch_size("eta_over_b", 2.0**-8, 0.5, dataset_size=128) == 128.0
    with pytest.raises(ValueError, match="dataset size 127"):
        solve_batch_size("eta_over_b", 2.0**-8, 0.5, dataset_size=127)
