"""Train/eval flags kept per submodule across measurements (sgdlab.models.modes)."""
import torch
from torch import nn

from sgdlab.models.modes import (attributes_kept, buffer_restorer, buffers_kept, eval_mode,
                                 first_batch_norm, module_label, modes_kept,
                                 uses_batch_statistics)


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


class _Counting(nn.Module):
    """A layer whose forward changes plain attributes: a call counter, a flag, the last
    input's size (added on first call), and a list it appends to in place."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.calls, self.seen_eval, self.history = 0, False, []

    def forward(self, x):
        self.calls += 1
        self.seen_eval = self.seen_eval or not self.training
        self.last_size = len(x)
        self.history.append(len(x))
        return self.lin(x)


def _counting_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(_Counting(), nn.BatchNorm1d(3), nn.Linear(3, 2)).train()


def test_a_measurement_leaves_plain_attributes_as_it_found_them():
    # the helpers restored flags and buffers, but a forward's counter, flag and new
    # attribute stayed changed: a measurement on a schedule changed the model it measured
    model = _counting_model()
    x = torch.randn(8, 3)
    model(x[:5])
    layer, history = model[0], model[0].history
    for block in (eval_mode(model), modes_kept(model), buffers_kept(model),
                  attributes_kept(model)):
        with block:
            model(x)
            model.train()(x)
        assert (layer.calls, layer.seen_eval, layer.last_size) == (1, False, 5)
        assert layer.history is history      # the binding; the list was appended in place
    bn = {k: v.clone() for k, v in model[1].state_dict().items()}
    assert "num_batches_tracked" in bn
    with buffers_kept(model):
        model(x)
    assert all(torch.equal(v, model[1].state_dict()[k]) for k, v in bn.items())
    fresh = _counting_model()
    with eval_mode(fresh):
        fresh(x)
    assert "last_size" not in vars(fresh[0]) and fresh[0].calls == 0


def test_public_measurements_leave_the_counter_and_batch_norm_statistics_alone():
    from sgdlab.measure.interpolation import evaluate
    from sgdlab.measure.sharpness import mean_loss

    model = _counting_model()
    x, y = torch.randn(8, 3), torch.arange(8) % 2
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = nn.CrossEntropyLoss()
    evaluate(model, loss_fn, (x, y))
    mean_loss(model, loss_fn, (x, y))
    assert model[0].calls == 0 and model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_lazy_module_materialised_in_a_block_keeps_its_new_attributes():
    model = nn.Sequential(nn.LazyLinear(2))
    with eval_mode(model):
        model(torch.zeros(1, 5))
    assert type(model[0]) is nn.Linear and model[0].in_features == 5
    assert model(torch.zeros(1, 5)).shape == (1, 2)


def test_buffers_kept_on_a_scripted_model():
    # a scripted module's buffer table has no .get: buffers_kept (and so every
    # MeasurementCallback) failed on exit with an AttributeError
    model = torch.jit.script(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).train())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with buffers_kept(model):
        model(torch.randn(8, 3))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_lazy_module_that_keeps_its_class_keeps_what_it_set_when_materialised():
    # a LazyModuleMixin without cls_to_become keeps its class: the size its
    # initialize_parameters recorded was put back to 0 beside a materialised weight
    from torch.nn.modules.lazy import LazyModuleMixin
    from torch.nn.parameter import UninitializedParameter

    class LazyScale(LazyModuleMixin, nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.features = UninitializedParameter(), 0

        def initialize_parameters(self, x):
            self.features = x.shape[-1]
            self.weight.materialize((self.features,))

        def forward(self, x):
            return x * self.weight

    model = nn.Sequential(LazyScale())
    with eval_mode(model):
        model(torch.ones(1, 4))
    assert type(model[0]) is LazyScale and model[0].weight.shape == (4,)
    assert model[0].features == 4 and "_initialize_hook" not in vars(model[0])


def test_buffers_kept_on_a_lazy_model_not_yet_materialised():
    # an uninitialized buffer cannot be copied: buffers_kept (and so a MeasurementCallback at
    # step 0, before the first forward pass) failed on entry with torch's ValueError
    model = nn.Sequential(nn.LazyLinear(3), nn.LazyBatchNorm1d(), nn.BatchNorm1d(3)).train()
    before = {k: v.clone() for k, v in model[2].state_dict().items()}
    with buffers_kept(model):
        model(torch.randn(4, 5))
    assert type(model[1]) is nn.BatchNorm1d and model[1].running_mean.shape == (3,)
    assert all(torch.equal(v, model[2].state_dict()[k]) for k, v in before.items())


def test_a_batch_norm_without_running_statistics_uses_its_batch_in_eval_mode_too():
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, track_running_stats=False)).eval()
    assert uses_batch_statistics(net)
    assert not uses_batch_statistics(nn.Sequential(nn.BatchNorm1d(3)).eval())
