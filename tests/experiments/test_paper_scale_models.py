"""Every network the catalogue trains at ``paper`` scale is built, as the train procedure
builds it, on its dataset's real input format (tiny MNIST / Fashion-MNIST / CIFAR files written
in the standard formats), and takes one forward and backward pass: a shape or option that only
the paper's configuration reaches fails here, not hours into a cluster job. Size options
(``n_train``, ``train_size``, ...) are dropped, since the files hold a few examples; pretrained
``weights`` files (ImageNet VGG-16) are not at hand and are left out."""
from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

from sgdlab.experiments.procedures.train import build
from sgdlab.experiments.spec import catalogue_files, load_experiment
from sgdlab.models.registry import describe
from sgdlab.testing import make_cifar10, make_idx_dir, write_cifar_batch

SIZE_OPTIONS = ("n_train", "n_test", "train_size", "test_size", "label_noise")


def _with_defaults(model: dict) -> dict:
    """The model options with the builder's defaults filled in: two entries that spell the same
    network differently (one option given at its default value) build it once here."""
    info = describe(model["name"])
    sig = inspect.signature(info.builder)
    return {**{k: q.default for k, q in sig.parameters.items()
               if q.kind is q.KEYWORD_ONLY and q.default is not q.empty}, **model,
            "name": info.name}


def _paper_networks() -> dict[str, dict]:
    """One parameter set per distinct (model, dataset format, loss, dtype) at paper scale."""
    out: dict[str, dict] = {}
    for name in sorted(catalogue_files()):
        for run in load_experiment(name, "paper").expand(data_dir="DATA"):
            p = run.params
            if not isinstance(p, dict) or "model" not in p or "dataset" not in p \
                    or p.get("init_from"):
                continue
            p = {**p, "dataset": {k: v for k, v in p["dataset"].items()
                                  if k not in SIZE_OPTIONS}}
            p["model"] = {k: v for k, v in p["model"].items() if k != "weights"}
            key = json.dumps({**{k: p.get(k) for k in ("dataset", "loss", "dtype")},
                              "model": _with_defaults(p["model"])}, sort_keys=True, default=str)
            out.setdefault(key, {**p, "_entry": name})
    return out


NETWORKS = _paper_networks()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-data")
    make_idx_dir(root / "mnist", n_train=30, n_test=10)
    make_idx_dir(root / "fashion_mnist", n_train=30, n_test=10, seed=1)
    make_cifar10(root, n=6, n_test=10)
    d = root / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        fine = np.arange(20) * 5 % 100
        write_cifar_batch(d / split, rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8),
                          fine, key=b"fine_labels", extra={b"coarse_labels": list(fine // 5)})
    # War and Peace's file name (text_chars) and Mikolov's PTB files, a few windows each
    words = ("well prince so genoa and lucca are now just family estates of the buonapartes "
             "but i warn you if you dont tell me that this means war").split()
    lines = [" ".join(words[i % 7:] + words[:i % 7]) for i in range(40)]
    (root / "pg2600.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    d = root / "simple-examples" / "data"
    d.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (d / f"ptb.{split}.txt").write_text("".join(f" {x} \n" for x in lines[:12]))
    return root


def test_the_catalogue_trains_networks_at_paper_scale():
    names = {p["model"]["name"] for p in NETWORKS.values()}
    assert {"vgg-11", "resnet-56", "allcnn", "musso-vgg16", "lenet"} <= names, names


@pytest.mark.parametrize("key", list(NETWORKS), ids=[
    f"{p['_entry']}:{p['model']['name']}:{p['dataset']['name']}" for p in NETWORKS.values()])
def test_paper_scale_network_takes_a_step_on_its_data_format(key, data_dir):
    p = dict(NETWORKS[key])
    if "data_dir" in p["dataset"]:
        p["dataset"] = {**p["dataset"], "data_dir": str(data_dir)}
    torch.set_num_threads(1)
    ds, model, loss_fn, dtype = build(p, seed=0)
    x, y = ds.x_train[:2], ds.y_train[:2]
    out = model.train()(x)
    # scores (N, C) or, per position of a sequence, (N, C, T): the classes on dim 1
    assert out.shape[0] == 2 and out.shape[1] == ds.num_outputs, out.shape
    loss_fn(out, y).backward()
    grads = [q.grad for q in model.parameters() if q.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
