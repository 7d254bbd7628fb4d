"""sgdlab.train.callbacks: MeasurementCallback around a training run."""
import torch
from torch import nn

from sgdlab.data import Dataset
from sgdlab.measure import gradient_covariance
from sgdlab.train import MeasurementCallback, train


def test_a_measurement_that_sets_eval_mode_leaves_training_in_train_mode():
    # a measurement told to "call model.eval() first" (Σ with batch norm) left the rest of the
    # run training in eval mode: batch norm frozen, dropout off
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.1), nn.Linear(6, 2))
    model[1].eval()                       # one layer frozen by the caller, kept so
    seen = []

    def sigma(ctx):
        seen.append([m.training for m in ctx.model])
        ctx.model.eval()
        return {"my/sigma": gradient_covariance(ctx.model, ctx.loss_fn, ctx.data.train).trace()}

    r = train(model, nn.CrossEntropyLoss(), Dataset(x, y), torch.optim.SGD(model.parameters(), 0.1),
              epochs=1, batch_size=8, callbacks=[MeasurementCallback(sigma, every=2)],
              progress=False)
    assert [s for s, _ in r.history["my/sigma"]] == [0, 2, 4]
    assert seen == [[True, False, True, True]] * 3
    assert [m.training for m in model] == [True, False, True, True]
