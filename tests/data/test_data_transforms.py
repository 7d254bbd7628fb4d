"""Label noise, subsets and standardisation of a Dataset."""
from __future__ import annotations

import pytest
import torch

from sgdlab.data import Dataset, noisy_mask, standardize, subset, with_label_noise
from sgdlab.errors import UserError


def toy(n_train=60, n_test=30, k=3, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(torch.randn(n_train, 2, 4, generator=g), torch.arange(n_train) % k,
                   torch.randn(n_test, 2, 4, generator=g), torch.arange(n_test) % k,
                   {"name": "toy", "task": "classification", "input_shape": (2, 4),
                    "num_outputs": k, "seed": seed})


@pytest.mark.parametrize("k", [2, 3, 10])
def test_label_noise_changes_exactly_num_noisy_labels_to_wrong_ones(k):
    ds = toy(n_train=100, k=k)
    noisy = with_label_noise(ds, 17, seed=4)
    changed = noisy.y_train != ds.y_train
    assert int(changed.sum()) == 17  # every chosen label really changed: no "noise" to itself
    info = noisy.meta["label_noise"]
    assert info["indices"] == torch.nonzero(changed).flatten().tolist()
    assert info["original_labels"] == ds.y_train[changed].tolist()
    assert torch.equal(noisy_mask(noisy), changed)
    assert noisy.y_train.min() >= 0 and noisy.y_train.max() < k
    assert torch.equal(noisy.y_test, ds.y_test) and noisy.x_train is ds.x_train
    assert "label_noise" not in ds.meta  # input untouched
    assert torch.equal(with_label_noise(ds, 17, seed=4).y_train, noisy.y_train)
    assert not torch.equal(with_label_noise(ds, 17, seed=5).y_train, noisy.y_train)


def test_label_noise_wrong_labels_cover_all_other_classes():
    ds = toy(n_train=3000, k=4)
    noisy = with_label_noise(ds, 3000, seed=0)
    # from true class 0 the new labels are uniform over {1, 2, 3}
    new = noisy.y_train[ds.y_train == 0]
    counts = torch.bincount(new, minlength=4)
    assert counts[0] == 0 and counts[1:].min() > 200


def test_label_noise_errors():
    ds = toy()
    with pytest.raises(UserError, match="exceeds"):
        with_label_noise(ds, 61)
    with pytest.raises(UserError, match="already has label noise"):
        with_label_noise(with_label_noise(ds, 2), 2)
    reg = Dataset(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(2, 1), torch.zeros(2, 1),
                  {"task": "regression", "num_outputs": 1})
    with pytest.raises(UserError, match="classification"):
        with_label_noise(reg, 1)


def test_subset_balanced_seeded_and_keeps_noise_bookkeeping():
    ds = with_label_noise(toy(n_train=60, k=3), 30, seed=1)
    sub = subset(ds, 12, 6, seed=2)
    assert len(sub.y_train) == 12 and len(sub.y_test) == 6
    # balance is on the (possibly noisy) labels the model sees
    assert torch.bincount(sub.y_train, minlength=3).tolist() == [4, 4, 4]
    assert torch.equal(subset(ds, 12, 6, seed=2).x_train, sub.x_train)
    assert not torch.equal(subset(ds, 12, 6, seed=3).x_train, sub.x_train)
    # the renumbered noise indices point at exactly the corrupted examples that were kept
    mask = noisy_mask(sub)
    full_rows = {tuple(r.flatten().tolist()) for r in ds.x_train[noisy_mask(ds)]}
    kept = {tuple(r.flatten().tolist()) for r in sub.x_train[mask]}
    assert kept == full_rows & {tuple(r.flatten().tolist()) for r in sub.x_train}
    assert sub.meta["label_noise"]["num_noisy"] == int(mask.sum())
    # Zhu et al.: 1,000 clean + 200 wrong -> here 10 clean + 2 wrong
    zhu = with_label_noise(subset(toy(), 12, seed=0), 2, seed=0)
    assert int(noisy_mask(zhu).sum()) == 2 and len(zhu.y_train) == 12


def test_standardize_uses_train_statistics_per_channel():
    ds = toy()
    ds.x_train[:, 1] = ds.x_train[:, 1] * 5 + 3
    st = standardize(ds)
    x = st.x_train.double()
    for c in range(2):
        assert x[:, c].mean().item() == pytest.approx(0.0, abs=1e-6)
        assert x[:, c].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    m = ds.x_train.double()[:, 1].mean()
    s = ds.x_train.double()[:, 1].std(unbiased=False)
    expect = ((ds.x_test.double()[:, 1] - m) / s).float()
    torch.testing.assert_close(st.x_test[:, 1], expect)
    assert len(st.meta["standardize"]["mean"]) == 2
    # per_channel=False: one mean and one std over every entry of the training inputs
    one = standardize(ds, per_channel=False)
    m, s = ds.x_train.double().mean(), ds.x_train.double().std(unbiased=False)
    torch.testing.assert_close(one.x_test, ((ds.x_test.double() - m) / s).float())
    assert one.meta["standardize"]["mean"] == pytest.approx([float(m)])


def test_subset_refuses_an_empty_split():
    # n_train=0 loaded, then every run of the config failed with "the training set is empty"
    # (recorded as a failed run whose resume could never succeed)
    ds = toy()
    for kwargs, name in (({"n_train": 0}, "n_train"), ({"n_train": None, "n_test": 0}, "n_test")):
        with pytest.raises(UserError, match=f"option '{name}' must be an int >= 1, got 0"):
            subset(ds, **kwargs)


def token_windows_dataset() -> Dataset:
    """Int64 windows (N, T) and their next tokens, a label per position (the text datasets')."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5, (40 * 6 + 1,), generator=g)
    x, y = tokens[:-1].reshape(40, 6), tokens[1:].reshape(40, 6)
    return Dataset(x, y, x[:10].clone(), y[:10].clone(), {"name": "windows"})


def test_subset_of_windows_with_a_label_per_position_is_a_plain_seeded_subset():
    ds = token_windows_dataset()
    a = subset(ds, 12, 4, seed=1)
    assert a.x_train.shape == (12, 6) and a.meta["subsets"][-1]["balanced"] is False
    idx = [ds.x_train.tolist().index(r) for r in a.x_train.tolist()]
    assert idx == sorted(idx) and len(set(idx)) == 12
    assert torch.equal(a.y_train, ds.y_train[idx])
    assert torch.equal(subset(ds, 12, 4, seed=1).x_train, a.x_train)


def test_transforms_for_one_label_per_example_refuse_a_label_per_position():
    from sgdlab.data import select_classes

    ds = token_windows_dataset()
    with pytest.raises(UserError, match=r"label noise needs one class label per example; "
                                        r"dataset 'windows' has a label per position "
                                        r"\(targets shaped \(40, 6\)\)"):
        with_label_noise(ds, 3)
    with pytest.raises(UserError, match="option 'classes' needs one class label per example"):
        select_classes(ds, [0, 1])
    with pytest.raises(UserError, match=r"standardize shifts and scales real-valued inputs; "
                                        r"dataset 'windows' has torch.int64 inputs"):
        standardize(ds)


def test_subset_draws_the_test_examples_with_other_numbers_than_the_training_ones():
    # train and test with the same labels: were both drawn from one seed, the test subset
    # would be the training subset's positions again, for every seed
    ds = toy(n_train=30, n_test=30, k=3)
    same = [torch.equal(_positions(ds, subset(ds, 6, 6, seed=s)),
                        _positions(ds, subset(ds, 6, 6, seed=s), test=True)) for s in range(4)]
    assert not all(same)


def _positions(ds: Dataset, sub: Dataset, test: bool = False) -> torch.Tensor:
    """The positions in ``ds`` of the examples ``sub`` holds (inputs are random: unique)."""
    full, part = (ds.x_test, sub.x_test) if test else (ds.x_train, sub.x_train)
    return torch.tensor([next(i for i in range(len(full)) if torch.equal(full[i], r))
                         for r in part])


def test_standardize_keeps_float64_inputs_float64():
    x = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    ds = Dataset(x, torch.tensor([0, 1]), torch.tensor([[3.0]], dtype=torch.float64),
                 torch.tensor([0]), {"name": "f64", "task": "classification",
                                     "input_shape": (1,), "num_outputs": 2})
    st = standardize(ds)
    assert st.x_train.dtype == st.x_test.dtype == torch.float64
    # mean 1, population std 1: exactly -1, 1 and (3 - 1) / 1
    assert st.x_train.tolist() == [[-1.0], [1.0]] and st.x_test.tolist() == [[2.0]]


def test_subset_keeps_the_label_noise_of_the_first_example():
    # every training label corrupted, the whole split kept: all 12 stay marked, example 0 too
    ds = with_label_noise(toy(n_train=12, k=3), 12, seed=0)
    sub = subset(ds, 12, seed=1, balanced=False)
    assert sub.meta["label_noise"]["indices"] == list(range(12))
    assert sub.meta["label_noise"]["num_noisy"] == 12 and bool(noisy_mask(sub).all())


def test_standardize_flat_inputs_per_feature_a_constant_one_unscaled_and_eps_added():
    # features (0, 2) and (5, 5): means 1 and 5, population stds 1 and 0 (taken as 1)
    x = torch.tensor([[0.0, 5.0], [2.0, 5.0]], dtype=torch.float64)
    ds = Dataset(x, torch.tensor([0, 1]), torch.tensor([[4.0, 8.0]], dtype=torch.float64),
                 torch.tensor([0]), {"name": "flat", "task": "classification",
                                     "input_shape": (2,), "num_outputs": 2})
    st = standardize(ds)
    assert st.x_train.tolist() == [[-1.0, 0.0], [1.0, 0.0]] and st.x_test.tolist() == [[3.0, 3.0]]
    assert st.meta["standardize"]["mean"] == [1.0, 5.0]
    assert st.meta["standardize"]["std"] == [1.0, 1.0]
    # eps is added to the std (after a zero std became 1): (4 - 1) / 1.5, (8 - 5) / 1.5
    assert standardize(ds, eps=0.5).x_test.tolist() == [[2.0, 2.0]]


def test_label_noise_draws_wrong_labels_over_num_classes_and_needs_two():
    # num_classes=5 for a set whose labels are 0..2: wrong labels come from all 5 classes
    ds = toy(n_train=60, k=3)
    wide = with_label_noise(ds, 60, seed=0, num_classes=5).y_train
    assert set(wide.tolist()) == {0, 1, 2, 3, 4} and bool((wide != ds.y_train).all())
    one = Dataset(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), meta={"name": "one"})
    with pytest.raises(UserError, match="label noise needs at least 2 classes"):
        with_label_noise(one, 2)


def test_subset_records_its_sizes_in_meta():
    sub = subset(toy(), 12, 6, seed=0)
    assert (sub.meta["n_train"], sub.meta["n_test"]) == (12, 6)
    assert sub.meta["subsets"] == [{"n_train": 12, "n_test": 6, "seed": 0, "balanced": True}]


@pytest.mark.parametrize("bad", [-1, 2.5])
def test_label_noise_of_no_whole_number_of_examples_is_named(bad):
    with pytest.raises(UserError, match=rf"option 'num_noisy' must be an int >= 0, got {bad}"):
        with_label_noise(toy(), bad)
