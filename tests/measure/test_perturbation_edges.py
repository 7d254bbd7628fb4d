"""min |gradient coordinate| (thesis Fig. 2.3b) refuses an empty tensor among others by name."""
import pytest
import torch

from sgdlab.measure.perturbation import min_abs_coordinates


def test_an_empty_tensor_among_others_is_refused_by_name():
    with pytest.raises(ValueError, match="empty gradient tensor"):
        min_abs_coordinates([torch.ones(2), torch.zeros(0)])
