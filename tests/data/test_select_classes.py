"""``classes=[...]``: keep some classes, relabelled 0..k−1 (thesis §6.3.3's five MNIST digits)."""
import pytest
import torch

from sgdlab.data import Dataset, load_dataset, select_classes, with_label_noise
from sgdlab.errors import UserError


def test_classes_keeps_and_relabels_in_the_given_order():
    full = load_dataset("digits", seed=0)
    ds = load_dataset("digits", seed=0, classes=[3, 0, 7])
    assert ds.num_outputs == 3 and ds.meta["classes"] == [3, 0, 7]
    for x, y, fx, fy in ((ds.x_train, ds.y_train, full.x_train, full.y_train),
                         (ds.x_test, ds.y_test, full.x_test, full.y_test)):
        m = (fy == 3) | (fy == 0) | (fy == 7)
        assert torch.equal(x, fx[m])
        assert y.tolist() == [[3, 0, 7].index(int(v)) for v in fy[m]]
    assert set(ds.y_train.tolist()) == {0, 1, 2}
    # then the seeded subset applies to the kept classes
    sub = load_dataset("digits", seed=0, classes=[0, 1], n_train=40)
    assert len(sub.y_train) == 40 and set(sub.y_train.tolist()) == {0, 1}


@pytest.mark.parametrize("bad", [[], [0, 0], [10], "01", 3])
def test_bad_classes_are_user_errors(bad):
    with pytest.raises(UserError, match="classes"):
        select_classes(load_dataset("digits"), bad)
    with pytest.raises(UserError, match="classification"):
        load_dataset("cubic", classes=[0])


def test_classes_of_a_dataset_with_uint8_labels():
    # labels as an IDX file holds them (uint8) indexed the relabelling table as a boolean mask
    # (an IndexError)
    x = torch.arange(3.0)[:, None]
    y = torch.tensor([2, 1, 2], dtype=torch.uint8)
    ds = select_classes(Dataset(x, y, x, y), [2])
    assert ds.x_train.flatten().tolist() == [0.0, 2.0] and ds.y_train.tolist() == [0, 0]
    x = torch.arange(6.0)[:, None]
    y = torch.tensor([0, 1, 2, 0, 1, 2], dtype=torch.uint8)
    ds = select_classes(Dataset(x, y, x, y), [2, 0])
    assert ds.x_test.flatten().tolist() == [0.0, 2.0, 3.0, 5.0]
    assert ds.y_test.tolist() == [1, 0, 1, 0]


def test_classes_are_selected_before_label_noise_not_after():
    # the recorded noisy indices and original labels would no longer match the examples
    x, y = torch.arange(6.0)[:, None], torch.tensor([0, 1, 2, 0, 1, 2])
    noisy = with_label_noise(Dataset(x, y, x, y), 2, seed=0)
    with pytest.raises(UserError, match="select classes before adding label noise"):
        select_classes(noisy, [0, 1])
