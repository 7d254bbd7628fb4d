"""Dataset.from_torch: a torch dataset or DataLoader read once into a Dataset's tensors."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from sgdlab.data import Dataset


class Items(torch.utils.data.Dataset):
    """A map-style dataset of one's own: item i is ``make(i)``."""

    def __init__(self, n: int, make):
        self.n, self.make = n, make

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.make(i)


def _xy(n: int = 20):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 2, generator=g), torch.arange(n) % 4


def test_a_tensor_dataset_becomes_its_own_tensors():
    x, y = _xy()
    ds = Dataset.from_torch(TensorDataset(x, y), TensorDataset(x[:5], y[:5]), batch_size=6,
                            meta={"name": "mine"})
    assert torch.equal(ds.x_train, x) and torch.equal(ds.y_train, y)
    assert torch.equal(ds.x_test, x[:5]) and torch.equal(ds.y_test, y[:5])
    assert ds.name == "mine" and ds.task == "classification" and ds.num_outputs == 4
    no_test = Dataset.from_torch(TensorDataset(x, y))
    assert no_test.x_test.shape == (0, 3, 2) and no_test.meta == {}


def test_int_targets_of_ones_own_dataset_become_int64_class_labels():
    x, y = _xy()
    ints = Dataset.from_torch(Items(20, lambda i: (x[i], int(y[i]))), batch_size=8)
    assert torch.equal(ds_x := ints.x_train, x) and ds_x.dtype == torch.float32
    assert ints.y_train.dtype == torch.int64 and torch.equal(ints.y_train, y)
    # 0-d int32 tensors and numpy inputs collate to int32 / the arrays' dtype
    small = Dataset.from_torch(Items(20, lambda i: (x[i].numpy(), y[i].to(torch.int32))))
    assert small.y_train.dtype == torch.int64 and torch.equal(small.y_train, y)
    assert torch.equal(small.x_train, x)


def test_a_dataloader_is_read_as_it_batches():
    x, y = _xy()
    ds = Dataset.from_torch(DataLoader(TensorDataset(x, y), batch_size=7))    # 7, 7, 6
    assert torch.equal(ds.x_train, x) and torch.equal(ds.y_train, y)


def test_float_targets_are_regression_targets_of_the_default_dtype():
    x, _ = _xy()
    t = torch.linspace(-1, 1, 20, dtype=torch.float64)
    scalar = Dataset.from_torch(Items(20, lambda i: (x[i], float(t[i]))), batch_size=3)
    # the default collate made float64 of Python floats
    assert scalar.y_train.dtype == torch.float32 and scalar.task == "regression"
    assert torch.equal(scalar.y_train, t.float())
    wide = Dataset.from_torch(Items(20, lambda i: (x[i], torch.stack([t[i], -t[i]]))))
    assert wide.y_train.dtype == torch.float64 and wide.y_train.shape == (20, 2)
    assert wide.num_outputs == 2 and torch.equal(wide.y_train[:, 1], -t)


def test_an_iterable_dataset_is_read_as_it_iterates():
    x, y = _xy()

    class Stream(IterableDataset):
        def __iter__(self):
            return zip(x, y)

    ds = Dataset.from_torch(Stream(), batch_size=6)
    assert torch.equal(ds.x_train, x) and torch.equal(ds.y_train, y)


@pytest.mark.parametrize("item, said", [
    (lambda i: torch.zeros(3), r"train item 0 is a Tensor of shape \(3,\), not an \(input, "
                               r"target\) pair"),
    (lambda i: (torch.zeros(3), 1, "a"), r"is a tuple of 3 \(Tensor, int, str\), not an"),
    (lambda i: {"x": torch.zeros(3), "y": 1}, r"is a dict with keys \['x', 'y'\], not an"),
    (lambda i: ((torch.zeros(3), torch.zeros(2)), 1),
     r"train item 0's input is a tuple of 2 \(Tensor, Tensor\): an item's input is one"),
    (lambda i: (torch.zeros(3), "cat"), r"train item 0's target is a str"),
])
def test_items_that_are_not_input_target_pairs_are_refused(item, said):
    with pytest.raises(ValueError, match=said):
        Dataset.from_torch(Items(4, item))


def test_inputs_of_varying_shapes_name_both_shapes_and_the_item():
    x, y = _xy()
    ragged = Items(20, lambda i: (x[i, :, : 1 + (i == 13)], y[i]))
    with pytest.raises(ValueError, match=r"train item 13 has an input of shape \(3, 2\), item "
                                         r"0 one of shape \(3, 1\): .*must share a shape"):
        Dataset.from_torch(ragged, batch_size=5)
    # a DataLoader's batches: the batch that differs, from its first item, or torch's message
    # inside one batch
    by_batch = Items(20, lambda i: (x[i, :, : 1 + (i >= 14)], y[i]))
    with pytest.raises(ValueError, match=r"train item 14 has an input of shape \(3, 2\)"):
        Dataset.from_torch(DataLoader(by_batch, batch_size=7))
    with pytest.raises(ValueError, match=r"batch 1 of the test DataLoader holds items of "
                                         r"several shapes \(stack expects"):
        Dataset.from_torch(TensorDataset(x, y), DataLoader(ragged, batch_size=7))


def test_pil_images_are_told_to_become_tensors():
    image = pytest.importorskip("PIL.Image")
    pictures = Items(4, lambda i: (image.new("L", (2, 2)), i))
    with pytest.raises(ValueError, match=r"train item 0's input is a PIL image .* "
                                         r"transform=ToTensor\(\)"):
        Dataset.from_torch(pictures)
    with pytest.raises(ValueError, match=r"the train DataLoader's items cannot be stacked by "
                                         r"torch's default collate .*transform=ToTensor\(\)"):
        Dataset.from_torch(DataLoader(pictures, batch_size=2))


def test_an_empty_split_is_refused():
    x, y = _xy()
    with pytest.raises(ValueError, match="the train split is empty"):
        Dataset.from_torch(TensorDataset(x[:0], y[:0]))
    with pytest.raises(ValueError, match="the test split is empty .*leave test out"):
        Dataset.from_torch(TensorDataset(x, y), DataLoader(TensorDataset(x[:0], y[:0])))


def test_a_loader_that_drops_examples_is_refused_one_that_drops_none_is_read():
    x, y = _xy()
    with pytest.raises(ValueError, match=r"drop_last=True\): 6 examples would be left out"):
        Dataset.from_torch(DataLoader(TensorDataset(x, y), batch_size=7, drop_last=True))
    whole = Dataset.from_torch(DataLoader(TensorDataset(x, y), batch_size=5, drop_last=True))
    assert torch.equal(whole.x_train, x)


def test_a_loader_that_shuffles_warns_once_and_gives_every_example():
    x, y = _xy()
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"the train DataLoader shuffles \(RandomSampler\): "
                                         r"its examples are read once, in a random order") as w:
        ds = Dataset.from_torch(DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True))
    assert len(w) == 1 and w[0].filename == __file__
    order = torch.argsort(ds.x_train[:, 0, 0])
    assert torch.equal(ds.x_train[order], x[torch.argsort(x[:, 0, 0])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Dataset.from_torch(DataLoader(TensorDataset(x, y), batch_size=7))


def test_what_is_no_torch_dataset_is_refused():
    x, y = _xy()
    with pytest.raises(ValueError, match=r"train is a ndarray, not a torch Dataset or "
                                         r"DataLoader; .*Dataset\(x_train, y_train"):
        Dataset.from_torch(np.zeros((3, 2)))


def test_a_batch_size_below_one_is_the_value_error_of_the_other_refusals():
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    for bad, said in ((0, "got 0"), (True, "not a bool (True)")):
        with pytest.raises(ValueError, match=re.escape(f"batch_size must be an int >= 1, {said}")):
            Dataset.from_torch(TensorDataset(x, y), batch_size=bad)


def test_a_loader_dropping_the_last_batch_of_an_iterable_of_unknown_length_is_refused():
    # len() of its sampler fails: how many it drops is unknown, which is not none
    class Stream(IterableDataset):
        def __iter__(self):
            return iter([(torch.tensor([float(i)]), i % 2) for i in range(10)])

    with pytest.raises(ValueError, match="drops its last partial batch .*its last examples"):
        Dataset.from_torch(DataLoader(Stream(), batch_size=4, drop_last=True))
    ds = Dataset.from_torch(DataLoader(Stream(), batch_size=4))
    assert ds.x_train.flatten().tolist() == [float(i) for i in range(10)]
