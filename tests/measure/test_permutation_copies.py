"""Permutation alignment, weight overlap, ensembles and averaged weights of network copies
(Chaudhari's thesis §5.0.1, Fig. 5.1), on tiny float64 networks with exact answers."""
import copy

import pytest
import torch
from torch import nn

from sgdlab.measure.permutation import (align_to, average_weights, averaged_accuracy,
                                        ensemble_accuracy, greedy_match, overlap_matrix,
                                        weight_overlap)


def mlp(seed, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(6, 5)]
    layers += [nn.BatchNorm1d(5)] if bn else []
    layers += [nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)]
    return nn.Sequential(*layers).double()


def cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(3 * 2 * 2, 5), nn.ReLU(),
                         nn.Linear(5, 3)).double()


def randomise_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g, dtype=torch.float64))
                m.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64))
                m.running_var.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
    return model


@torch.no_grad()
def permuted(model, perms):
    """``model`` with the units of its i-th weighted layer reordered by ``perms[i]`` (by hand:
    rows of that layer, its batch norm, and the inputs of the next weighted layer)."""
    out = mlp(0, bn=any(isinstance(m, nn.BatchNorm1d) for m in model)) \
        if isinstance(model[1], nn.Linear) else cnn(0)
    out.load_state_dict(model.state_dict())
    mods = list(out)
    weighted = [k for k, m in enumerate(mods) if isinstance(m, (nn.Linear, nn.Conv2d))]
    for n, perm in enumerate(perms):
        k, nxt = weighted[n], weighted[n + 1]
        mods[k].weight.copy_(mods[k].weight[perm])
        mods[k].bias.copy_(mods[k].bias[perm])
        for m in mods[k + 1:nxt]:
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                for t in (m.weight, m.bias, m.running_mean, m.running_var):
                    t.copy_(t[perm])
        w = mods[nxt].weight
        block = w.shape[1] // len(perm)
        idx = (perm[:, None] * block + torch.arange(block)).flatten()
        w.copy_(w[:, idx])
    return out


def test_greedy_match_takes_the_best_remaining_pair():
    # best pair (0, 1) = 0.9 first; of rows 1, 2 and columns 0, 2 then (2, 0) = 0.6; (1, 2)
    # is left, although row 1's best remaining column was 0
    sim = torch.tensor([[0.1, 0.9, 0.8], [0.5, 0.7, 0.4], [0.6, 0.0, 0.2]])
    assert greedy_match(sim).tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="square"):
        greedy_match(torch.zeros(2, 3))


@pytest.mark.parametrize("make,perms", [
    (lambda: randomise_bn(mlp(1, bn=True), 5), [torch.tensor([3, 0, 4, 1, 2]),
                                                 torch.tensor([2, 3, 1, 0])]),
    (lambda: randomise_bn(cnn(2), 6), [torch.tensor([2, 0, 3, 1]), torch.tensor([1, 2, 0]),
                                        torch.tensor([4, 3, 0, 2, 1])]),
])
def test_a_permuted_copy_is_recovered_exactly(make, perms):
    ref = make()
    shuffled = permuted(ref, perms)
    x = torch.randn(7, 6, dtype=torch.float64) if isinstance(ref[1], nn.Linear) \
        else torch.randn(7, 2, 4, 4, dtype=torch.float64)
    ref.eval(), shuffled.eval()
    assert torch.allclose(ref(x), shuffled(x), atol=1e-12)        # the symmetry itself
    assert weight_overlap(ref, shuffled) < 0.999
    aligned = align_to(ref, shuffled, check_input=x)
    for (k, p), q in zip(ref.state_dict().items(), aligned.state_dict().values()):
        assert torch.equal(p, q), k
    assert weight_overlap(ref, aligned) == pytest.approx(1.0, abs=1e-14)
    assert weight_overlap(ref, aligned, reading="layer-mean") == pytest.approx(1.0, abs=1e-14)
    aligned.eval()
    assert torch.allclose(aligned(x), ref(x), atol=1e-12)


def test_alignment_keeps_the_function_of_an_independent_copy():
    ref, other = randomise_bn(cnn(3), 7), randomise_bn(cnn(4), 8)
    x = torch.randn(9, 2, 4, 4, dtype=torch.float64)
    aligned = align_to(ref, other, check_input=x, atol=1e-12)
    other.eval(), aligned.eval()
    assert torch.allclose(aligned(x), other(x), atol=1e-12)
    # the greedy matching raises the overlap with the reference (on each layer's units)
    assert weight_overlap(ref, aligned) > weight_overlap(ref, other)
    # the read-out keeps its order
    assert torch.equal(aligned[-1].bias, other[-1].bias)


class Residual(nn.Module):
    """x -> b(x + relu(a(x))): no plain chain of layers."""
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.b(x + torch.relu(self.a(x)))


def test_unsupported_layers_and_residual_models_are_refused():
    torch.manual_seed(0)
    r1, r2 = Residual().double(), Residual().double()
    with pytest.raises(ValueError, match="not a plain chain"):
        align_to(r1, r2, check_input=torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="unsupported layer LSTM"):
        align_to(nn.Sequential(nn.LSTM(2, 2)), nn.Sequential(nn.LSTM(2, 2)))
    with pytest.raises(ValueError, match="same architecture"):
        align_to(mlp(0), mlp(0, bn=True))
    with pytest.raises(ValueError, match="similarity"):
        align_to(mlp(0), mlp(1), similarity="l2")


@torch.no_grad()
def test_overlap_is_the_cosine_of_the_weights():
    a, b = mlp(1), mlp(2)
    va = torch.cat([p.flatten() for p in a.parameters()])
    vb = torch.cat([p.flatten() for p in b.parameters()])
    assert weight_overlap(a, b) == pytest.approx(float(va @ vb / (va.norm() * vb.norm())),
                                                 rel=1e-12)
    layers = [(m1.weight.flatten(), m2.weight.flatten()) for m1, m2 in zip(a, b)
              if isinstance(m1, nn.Linear)]
    by_layer = sum(float(u @ v / (u.norm() * v.norm())) for u, v in layers) / 3
    assert weight_overlap(a, b, reading="layer-mean") == pytest.approx(by_layer, rel=1e-12)
    m = overlap_matrix([a, b, mlp(3)])
    assert m[0][0] == m[1][1] == 1.0 and m[0][1] == m[1][0] == weight_overlap(a, b)
    with pytest.raises(ValueError, match="reading"):
        weight_overlap(a, b, reading="mean")


def test_averaged_weights_are_the_mean():
    models = [randomise_bn(mlp(s, bn=True), s) for s in (1, 2, 3)]
    avg = average_weights(models)
    for k, t in avg.state_dict().items():
        ts = [m.state_dict()[k] for m in models]
        if t.is_floating_point():
            assert torch.allclose(t, (ts[0] + ts[1] + ts[2]) / 3, atol=1e-15, rtol=0), k
        else:
            assert torch.equal(t, ts[0])
    assert avg is not models[0] and models[0][1].weight is not avg[1].weight


def test_ensemble_accuracy_by_hand():
    class Fixed(nn.Module):      # returns fixed logits per sample index (x holds the index)
        def __init__(self, logits):
            super().__init__()
            self.logits = nn.Parameter(torch.tensor(logits, dtype=torch.float64))

        def forward(self, x):
            return self.logits[x.long()]

    # sample 0: model 1 is very sure of class 1, model 2 mildly of class 0 -> ensemble says 1
    # sample 1: both say 0; sample 2: model 1 says 2 weakly, model 2 says 1 strongly -> 1
    m1 = Fixed([[0.0, 5.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    m2 = Fixed([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    x, y = torch.arange(3), torch.tensor([0, 0, 1])
    assert ensemble_accuracy([m1], (x, y)) == pytest.approx(1 / 3)        # hits sample 1
    assert ensemble_accuracy([m2], (x, y)) == pytest.approx(1.0)
    assert ensemble_accuracy([m1, m2], (x, y)) == pytest.approx(2 / 3)    # samples 1 and 2
    # averaged weights: logits mean; sample 0 -> [0.5, 2.5, 0] says 1 (wrong)
    assert averaged_accuracy([m1, m2], [(x[:2], y[:2]), (x[2:], y[2:])]) == pytest.approx(2 / 3)


def test_biases_and_batch_norm_parameters_tell_units_with_equal_weights_apart():
    """Units 0 and 1 share their weight row and batch-norm scale and shift, and differ in
    bias; units 2 and 3 share row, bias and shift, and differ in their batch-norm scale: only
    the whole vector of a unit's incoming parameters (step 2 of the rule) matches each copy's
    unit to its own. Swapped in the copy, both pairs are recovered exactly (without the part
    that differs they tie, and ties go to the lowest index: unswapped)."""
    ref = randomise_bn(mlp(1, bn=True), 5)
    with torch.no_grad():
        ref[1].weight[1] = ref[1].weight[0]
        ref[1].weight[3] = ref[1].weight[2]
        ref[1].bias[3] = ref[1].bias[2]
        ref[1].bias[1] = ref[1].bias[0] + 1.0
        ref[2].weight[1], ref[2].bias[1] = ref[2].weight[0], ref[2].bias[0]
        ref[2].weight[3] = ref[2].weight[2] + 0.5
        ref[2].bias[3] = ref[2].bias[2]
    shuffled = permuted(ref, [torch.tensor([1, 0, 3, 2, 4]), torch.tensor([0, 1, 2, 3])])
    aligned = align_to(ref, shuffled)
    for (k, p), q in zip(ref.state_dict().items(), aligned.state_dict().values()):
        assert torch.equal(p, q), k


def test_cosine_and_inner_similarities_match_differently():
    """Reference rows 10·(1, 0) and (0, 1); copy rows (0.5, −0.866) and (0.6, 0.8). Cosines
    [[0.5, 0.6], [−0.866, 0.8]]: the best pair is (1, 1), then (0, 0): the copy keeps its
    order. Inner products [[5, 6], [−0.866, 0.8]]: (0, 1) first: its units are swapped."""
    def net(rows):
        m = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(),
                          nn.Linear(2, 1, bias=False)).double()
        with torch.no_grad():
            m[0].weight.copy_(torch.tensor(rows, dtype=torch.float64))
            m[2].weight.copy_(torch.tensor([[1.0, 2.0]], dtype=torch.float64))
        return m

    ref, copy = net([[10.0, 0.0], [0.0, 1.0]]), net([[0.5, -0.866], [0.6, 0.8]])
    cosine = align_to(ref, copy)
    assert torch.equal(cosine[0].weight, copy[0].weight)
    inner = align_to(ref, copy, similarity="inner")
    assert torch.equal(inner[0].weight, copy[0].weight.flip(0))
    assert torch.equal(inner[2].weight, torch.tensor([[2.0, 1.0]], dtype=torch.float64))


def test_ensembles_average_probabilities_in_eval_mode():
    """The ensemble averages softmax probabilities, not logits: one model very sure of class
    1 (logit 100) against two that mildly prefer class 0 gives class 0 (the logits' mean
    would give 1). A batch-norm model in train mode is evaluated in eval mode (labels are its
    eval-mode predictions; in train mode some differ) and left in train mode."""
    class Fixed(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = nn.Parameter(torch.tensor([logits], dtype=torch.float64))

        def forward(self, x):
            return self.logits.expand(len(x), 3)

    models = [Fixed([0.0, 100.0, 0.0]), Fixed([3.0, 0.0, 0.0]), Fixed([3.0, 0.0, 0.0])]
    x = torch.zeros(2, 1)
    assert ensemble_accuracy(models, (x, torch.tensor([0, 0]))) == 1.0
    assert ensemble_accuracy(models, (x, torch.tensor([1, 1]))) == 0.0

    model = randomise_bn(mlp(2, bn=True), 3).train()
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
        assert (model.train()(x).argmax(1) != y).any()
    assert ensemble_accuracy([model], (x, y)) == 1.0
    assert model.training


def test_averaged_accuracy_prepares_the_average_first():
    models = [mlp(1), mlp(2)]
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([2] * 3 + [0] * 7)

    @torch.no_grad()
    def always_class_2(avg):
        avg[-1].weight.zero_()
        avg[-1].bias.copy_(torch.tensor([0.0, 0.0, 1.0]))

    assert averaged_accuracy(models, (x, y), prepare=always_class_2) == pytest.approx(0.3)


def test_the_permuted_copy_s_outputs_are_checked_against_atol():
    """A residual model is no chain: its aligned copy's outputs differ by D; atol = D/2 refuses
    it, atol = 2D lets it pass."""
    torch.manual_seed(0)
    r1, r2 = Residual().double(), Residual().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        diff = float((r2(x) - align_to(r1, r2)(x)).abs().max())
    assert diff > 1e-3
    align_to(r1, r2, check_input=x, atol=2 * diff)
    with pytest.raises(ValueError, match="not a plain chain"):
        align_to(r1, r2, check_input=x, atol=diff / 2)


def test_alignment_and_averaging_refuse_what_they_cannot_handle():
    def refused(model, match):
        with pytest.raises(ValueError, match=match):
            align_to(model, copy.deepcopy(model))

    refused(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.BatchNorm1d(3),
                          nn.Linear(3, 2)), "more than one batch norm")
    refused(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(7, 2)), "not a multiple")
    refused(nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(8, 3, 3)), "channels")
    refused(nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.ReLU(), nn.Conv2d(4, 3, 3)),
            "grouped convolution")
    with pytest.raises(ValueError, match="same architecture"):
        average_weights([nn.Linear(4, 3), nn.Linear(5, 3)])
    zero = nn.Linear(4, 3)
    with torch.no_grad():
        zero.weight.zero_(), zero.bias.zero_()
    with pytest.raises(ValueError, match="all zero"):
        weight_overlap(zero, nn.Linear(4, 3))


@pytest.mark.parametrize("norm", ["weight_norm", "hook_weight_norm", "spectral_norm",
                                  "hook_spectral_norm"])
def test_a_layer_computing_its_weight_from_other_tensors_is_refused_by_name(norm):
    # the hook-based weight norm computes its weight again from g and v at every forward
    # pass: the copy's permuted weight was overwritten and the read-out's inputs alone were
    # permuted, a different function (0.21 off here) returned without a word
    import warnings

    from torch.nn.utils import parametrizations

    def build(seed):
        model = mlp(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)    # the hook-based ones: deprecated
            wrap = {"weight_norm": parametrizations.weight_norm,
                    "hook_weight_norm": nn.utils.weight_norm,
                    "spectral_norm": parametrizations.spectral_norm,
                    "hook_spectral_norm": nn.utils.spectral_norm}[norm]
            model[1] = wrap(model[1])
        return model.eval()

    with pytest.raises(ValueError, match=r"align_to: layer '1' \(\w*Linear\) computes its weight "
                                         r"from other tensors.*remove_"):
        align_to(build(0), build(1))


@pytest.mark.parametrize("share", ["layer_twice", "tied_weight"])
def test_a_weight_used_by_two_layers_is_refused_by_name(share):
    # a layer called twice, or two layers holding one weight: permuting the units of one use
    # permuted the other's rows as well, and a different function (0.13-0.88 off on 3-unit
    # chains) was returned without a word
    def build(seed):
        torch.manual_seed(seed)
        first, second = nn.Linear(3, 3), nn.Linear(3, 3)
        if share == "layer_twice":
            second = first
        else:
            second.weight = first.weight
        return nn.Sequential(first, nn.Tanh(), second, nn.Tanh(), nn.Linear(3, 2)).double()

    with pytest.raises(ValueError, match=r"align_to: parameter '2\.weight' is '0\.weight' as "
                                         r"well \(a layer called twice, or tied weights\).*"
                                         r"weights of their own"):
        align_to(build(0), build(1))


def test_ensemble_accuracy_refuses_outputs_without_class_scores_by_name():
    # one logit per sample: its softmax is 1, the argmax always class 0, and against (N, 1)
    # float targets the comparison broadcast to (N, N): an "accuracy" of 12.0 on 20 samples,
    # or the fraction of class-0 labels, without a word; a dict output failed inside softmax
    torch.manual_seed(0)
    x = torch.randn(20, 3, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    one_logit = nn.Linear(3, 1).double()

    class Scores(nn.Module):                   # the same classifier with two class scores
        def __init__(self, named: bool = False):
            super().__init__()
            self.lin, self.named = one_logit, named

        def forward(self, x):
            z = self.lin(x)
            z = torch.cat([torch.zeros_like(z), z], 1)
            return {"logits": z} if self.named else z

    for model, d in ((one_logit, (x, y)), (one_logit, (x, y[:, None].double())),
                     (Scores(), (x, y[:, None].double())), (Scores(named=True), (x, y))):
        with pytest.raises(ValueError, match=r"ensemble_accuracy needs class scores \(N, C\) "
                                             r"with C >= 2 .* integer class labels"):
            ensemble_accuracy([model, model], d)
    with torch.no_grad():
        hits = ((torch.sigmoid(one_logit(x)[:, 0]) > 0.5).long() == y).double().mean()
    assert ensemble_accuracy([Scores(), Scores()], (x, y)) == pytest.approx(float(hits))
