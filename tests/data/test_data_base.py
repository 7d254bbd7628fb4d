"""The Dataset record built from a user's own tensors, without the loaders' metadata."""
from __future__ import annotations

import pytest
import torch

from sgdlab.data import Dataset, with_label_noise
from sgdlab.errors import UserError


def own(y_train, y_test) -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(torch.randn(len(y_train), 3, generator=g), y_train,
                   torch.randn(len(y_test), 3, generator=g), y_test)


def _parts() -> dict[str, torch.Tensor]:
    """A record's four tensors: 6 training examples of 3 inputs, the first 4 as the test split."""
    x, y = torch.randn(6, 3), torch.arange(6) % 2
    return {"x_train": x, "y_train": y, "x_test": x[:4], "y_test": y[:4]}


def test_task_and_outputs_follow_the_targets_when_meta_is_empty():
    # integer targets are class labels, floating-point ones regression targets (GUIDE)
    labels = own(torch.tensor([0, 2, 1, 0]), torch.tensor([3, 1]))
    assert labels.task == "classification" and labels.num_outputs == 4   # label 3 is in test
    scalar = own(torch.randn(4), torch.randn(2))
    assert scalar.task == "regression" and scalar.num_outputs == 1
    vector = own(torch.randn(4, 5), torch.randn(2, 5))
    assert vector.task == "regression" and vector.num_outputs == 5
    assert "task=regression" in repr(vector)


def test_the_repr_of_a_record_without_a_name_says_it_is_unnamed():
    ds = own(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1]))
    assert repr(ds) == "Dataset(unnamed: train (4, 3), test (2, 3), task=classification)"
    ds.meta["name"] = "mine"
    assert repr(ds).startswith("Dataset(mine: train (4, 3)")


def test_meta_still_decides_when_it_names_the_task():
    ds = own(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1]))
    ds.meta.update(task="classification", num_outputs=10)
    assert ds.task == "classification" and ds.num_outputs == 10


def test_label_noise_refuses_real_valued_targets_of_an_own_dataset():
    # it used to shift the real-valued targets by random integers and report "label noise"
    with pytest.raises(UserError, match="classification"):
        with_label_noise(own(torch.randn(20), torch.randn(5)), 3)


def test_a_record_without_a_test_split_trains_without_test_metrics():
    # Dataset(x, y) was a TypeError: a user with training data alone had to make up a split
    from torch import nn

    from sgdlab.train import train

    x, y = torch.randn(12, 3, generator=torch.Generator().manual_seed(0)), torch.arange(12) % 2
    ds = Dataset(x, y)
    assert ds.x_test.shape == (0, 3) and ds.y_test.dtype == y.dtype
    assert ds.task == "classification" and ds.num_outputs == 2
    model = nn.Linear(3, 2)
    res = train(model, nn.CrossEntropyLoss(), ds, torch.optim.SGD(model.parameters(), lr=0.1),
                epochs=1, batch_size=4, progress=False)
    assert "train_acc" in res.final and not any(k.startswith("test_") for k in res.final)
    with pytest.raises(ValueError, match="give both x_test and y_test, or neither"):
        Dataset(x, y, x)


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_record_with_more_inputs_than_targets_is_refused_naming_both_lengths(split):
    # it was accepted and failed later, in training, with an indexing error
    parts = _parts()
    x, y = parts["x_train"], parts["y_train"]
    parts[f"y_{split}"] = parts[f"y_{split}"][:-1]
    n = len(parts[f"x_{split}"])
    with pytest.raises(ValueError, match=f"x_{split} has {n} examples but y_{split} has "
                                         f"{n - 1} \\(the {split} split"):
        Dataset(**parts)
    # the casts and subsets that rebuild a record keep the lengths, so still build
    ds = Dataset(x, y, x[:4], y[:4]).to(dtype=torch.float64)
    assert ds.x_train.dtype == torch.float64 and len(ds.y_test) == 4


@pytest.mark.parametrize("key", ["x_train", "y_train", "x_test", "y_test"])
def test_numpy_arrays_and_lists_are_refused_saying_how_to_convert(key):
    # a numpy array was accepted and training failed on it with "'numpy.ndarray' object has no
    # attribute 'to'"
    parts = _parts()
    for value, kind in ((parts[key].numpy(), "numpy.ndarray"), (parts[key].tolist(), "list")):
        with pytest.raises(ValueError, match=rf"Dataset: {key} is a {kind}, not a torch tensor: "
                                             r"convert it, torch\.as_tensor"):
            Dataset(**{**parts, key: value})


@pytest.mark.parametrize("key", ["x_train", "x_test"])
def test_inputs_of_several_tensors_are_refused_saying_how_to_wrap_the_model(key):
    # a dict of inputs failed with "unhashable type: 'slice'", a tuple of two tensors was told
    # to go through torch.as_tensor, which cannot convert it
    parts = _parts()
    n = len(parts[key])
    for value, kind in (({"a": torch.randn(n, 2), "b": torch.randn(n, 1)}, "dict"),
                        ((torch.randn(n, 2), torch.randn(n, 1)), "tuple")):
        with pytest.raises(ValueError, match=rf"Dataset: {key} is a {kind} of tensors, not one "
                                             r"tensor: .*wrap the model in a module"):
            Dataset(**{**parts, key: value})
    # a list of samples is stacked, not concatenated
    with pytest.raises(ValueError, match=r"is a list of tensors, not one tensor: .*samples one "
                                         r"by one: torch\.stack them; several inputs"):
        Dataset(**{**parts, key: list(parts[key])})


@pytest.mark.parametrize("key", ["y_train", "y_test"])
def test_targets_of_several_tensors_are_refused_speaking_of_targets(key):
    # labels gathered one by one (a list of 0-d tensors) were told of "the inputs of a split"
    # and to wrap the model
    parts = _parts()
    with pytest.raises(ValueError, match=r"is a list of tensors, not one tensor: the targets of "
                                         r"a split .*torch\.stack them; several targets .*a "
                                         r"loss_fn\(outputs, targets\)") as refused:
        Dataset(**{**parts, key: list(parts[key])})
    assert "model" not in str(refused.value)
    assert Dataset(**{**parts, key: torch.stack(list(parts[key]))}).y_train.shape == (6,)


def test_a_record_with_fewer_inputs_than_targets_is_refused_too():
    parts = _parts()
    parts["x_test"] = parts["x_test"][:3]
    with pytest.raises(ValueError, match=r"x_test has 3 examples but y_test has 4"):
        Dataset(**parts)


def test_shapes_and_outputs_of_a_record_without_meta_follow_its_tensors():
    # inputs (N, 3): input_shape (3,); regression targets (N, 2, 3): 6 outputs per example
    ds = Dataset(torch.zeros(4, 3), torch.zeros(4, 2, 3))
    assert ds.input_shape == (3,) and ds.task == "regression" and ds.num_outputs == 6


def test_to_casts_inputs_and_regression_targets_but_keeps_class_labels_int64():
    labels = own(torch.tensor([0, 1, 0, 1]), torch.tensor([1, 0])).to(dtype=torch.float64)
    assert labels.x_train.dtype == labels.x_test.dtype == torch.float64
    assert labels.y_train.dtype == labels.y_test.dtype == torch.int64
    targets = own(torch.randn(4, 2), torch.randn(2, 2)).to(dtype=torch.float64)
    assert targets.y_train.dtype == targets.y_test.dtype == torch.float64


@pytest.mark.parametrize("key", ["x_train", "y_train", "x_test", "y_test"])
def test_a_0d_tensor_is_refused_naming_it_and_its_shape(key):
    # a 0-d test split was accepted (as a split of no example) and training failed with
    # "len() of a 0-d tensor"; a 0-d training tensor failed with "slice() cannot be applied"
    parts = _parts()
    value = torch.tensor(1.5) if key[0] == "x" else torch.tensor(1)
    with pytest.raises(ValueError, match=rf"Dataset: {key} is a 0-d tensor \(shape \(\), the "
                                         rf"single number {value.item()}\): a split holds one "
                                         r"row per example"):
        Dataset(**{**parts, key: value})
    if key.endswith("train"):      # without a test split too (the empty split sliced it)
        with pytest.raises(ValueError, match=rf"Dataset: {key} is a 0-d tensor"):
            Dataset(**{k: v for k, v in {**parts, key: value}.items() if k.endswith("train")})
