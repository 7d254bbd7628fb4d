"""Train/eval flags kept per submodule across measurements (sgdlab.models.modes)."""
import torch
from torch import nn

from sgdlab.models.modes import (buffer_restorer, buffers_kept, eval_mode, first_batch_norm,
                                 module_label, modes_kept)


def _fine_tuning_model() -> nn.Sequential:
    """A training model whose batch norm is frozen in eval mode (fine-tuning)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.2), nn.Linear(4, 2))
    model.train()
    model[1].eval()
    return model


def test_eval_mode_restores_each_submodules_flag():
    model = _fine_tuning_model()
    before = [m.training for m in model.modules()]
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    with eval_mode(model, enabled=False):
        assert [m.training for m in model.modules()] == before
    with modes_kept(model):
        model.train()
    assert not model[1].training and model[2].training


def test_every_measurement_leaves_a_frozen_batch_norm_in_eval_mode():
    """evaluate (the training loop's and interpolation's), a measurement instrument and a GLD
    statistics refresh, around a model whose batch norm is frozen in eval mode: it stays in
    eval mode, and training leaves its running statistics alone."""
    from sgdlab.data.base import Dataset
    from sgdlab.measure.interpolation import evaluate as evaluate_on
    from sgdlab.optim import build_optimizer_for
    from sgdlab.testing import tiny_classification
    from sgdlab.train.callbacks import Schedule
    from sgdlab.train.instruments import build_instrument
    from sgdlab.train.loop import evaluate, train

    torch.manual_seed(0)
    x, y = tiny_classification(n=16, seed=1)
    x = x.float()
    model = _fine_tuning_model()
    stats = model[1].running_mean.clone()
    evaluate(model, nn.CrossEntropyLoss(), x, y)
    evaluate_on(model, nn.CrossEntropyLoss(), (x, y))
    assert model.training and not model[1].training
    opt = build_optimizer_for("gld-dynamic", model, loss_fn=nn.CrossEntropyLoss(), data=(x, y),
                              lr=0.05, noise_batch_size=4, seed=0)
    ds = Dataset(x, y, x, y, meta={"name": "toy", "task": "classification",
                                   "input_shape": (3,), "num_outputs": 2})
    res = train(model, nn.CrossEntropyLoss(), ds, opt, epochs=1, batch_size=8, progress=False,
                callbacks=[build_instrument("hessian", schedule=Schedule.every(1), k=1,
                                            eval_subset=None)])
    assert res.status == "finished" and len(res.history["hess/top_1"]) == 3
    assert model.training and not model[1].training
    torch.testing.assert_close(model[1].running_mean, stats, rtol=0, atol=0)


def test_one_definition_of_a_batch_norm_layer():
    """Every batch-norm kind counts (SyncBatchNorm, the lazy forms, subclasses); the
    hand-written passes' kinds are the three plain ones; sgdlab.measure re-exports the same
    objects, and no other module of sgdlab writes its own tuple of batch-norm classes."""
    import pathlib
    import re

    import sgdlab
    from sgdlab.measure import batch_norm
    from sgdlab.models.modes import BN_TYPES, PLAIN_BN_TYPES, has_batchnorm

    class Mine(nn.BatchNorm2d):
        pass

    for m in (nn.BatchNorm1d(2), nn.BatchNorm3d(2), nn.SyncBatchNorm(2), nn.LazyBatchNorm1d(),
              Mine(2)):
        assert isinstance(m, BN_TYPES) and has_batchnorm(nn.Sequential(nn.Linear(2, 2), m))
    assert not has_batchnorm(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.GroupNorm(1, 2)))
    assert not isinstance(nn.SyncBatchNorm(2), PLAIN_BN_TYPES)
    assert batch_norm.BN_TYPES is BN_TYPES and batch_norm.has_batchnorm is has_batchnorm
    written = re.compile(r"batchnorm\._BatchNorm|\(nn\.BatchNorm1d, nn\.BatchNorm2d")
    root = pathlib.Path(sgdlab.__file__).parent
    others = [str(p.relative_to(root)) for p in root.rglob("*.py")
              if p.name != "modes.py" and written.search(p.read_text())]
    assert others == []


def test_a_layer_is_named_as_a_layer_in_messages_not_as_a_bare_index():
    """"1 (BatchNorm1d) is in train mode" showed an nn.Sequential index with nothing around
    it; the model itself has no name."""
    model = _fine_tuning_model()
    assert first_batch_norm(model) == "layer '1' (BatchNorm1d)"
    assert first_batch_norm(model, training=True) is None          # frozen in eval mode
    assert module_label("net.2", nn.Dropout()) == "layer 'net.2' (Dropout)"
    assert module_label("", nn.BatchNorm1d(3)) == "the model (BatchNorm1d)"


def test_a_message_naming_the_model_reads_naturally_for_the_model_itself():
    """Where a message names no model otherwise, a submodule is the model's layer and the
    model itself is the model: "the model's the model (BatchNorm1d)" was read before."""
    assert module_label("net.2", nn.Dropout(), of_model=True) == \
        "the model's layer 'net.2' (Dropout)"
    assert module_label("", nn.Dropout(), of_model=True) == "the model (Dropout)"
    assert first_batch_norm(nn.BatchNorm1d(3), of_model=True) == "the model (BatchNorm1d)"
    assert first_batch_norm(_fine_tuning_model(), of_model=True) == \
        "the model's layer '1' (BatchNorm1d)"


def test_buffers_are_put_back_in_their_modules_with_their_values():
    # batch norm writes its statistics in place; a module of one's own may assign a new tensor
    # to the name (as symbolic tracing assigns a proxy): the module holds its own tensor again
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=None)).train()
    bn = model[1]
    tensors = dict(bn.named_buffers())
    before = {k: v.clone() for k, v in tensors.items()}
    restore = buffer_restorer(model)
    for _ in range(2):
        model(torch.randn(5, 3))
        bn.running_mean = torch.ones(4)
        restore()
        for k, v in bn.named_buffers():
            assert v is tensors[k] and torch.equal(v, before[k]), k
    with buffers_kept(model):
        model(torch.randn(5, 3))
        bn.running_var = torch.zeros(4)
    for k, v in bn.named_buffers():
        assert v is tensors[k] and torch.equal(v, before[k]), k
    model.eval()            # no forward pass writes a buffer: nothing is kept, nothing written
    restore = buffer_restorer(model)
    bn.running_mean.add_(1.0)
    restore()
    assert torch.equal(bn.running_mean, before["running_mean"] + 1.0)
