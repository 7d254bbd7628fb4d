import pytest
import torch
from torch import nn

from sgdlab.operators.params import params_vector
from sgdlab.store import RunStore
from sgdlab.testing import dense_hessian_reference, flat_loss, unique_prefix


@pytest.mark.parametrize("two_layers", [False, True])
def test_the_dense_hessian_reference_of_a_loss_linear_in_the_outputs(two_layers):
    # ∇L of a model linear in θ under a loss linear in the outputs has no graph: the
    # reference's rows were autograd's "element 0 of tensors does not require grad"
    torch.manual_seed(0)
    model = (nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1)) if two_layers
             else nn.Linear(3, 1)).double()
    x, y = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 1, dtype=torch.float64)

    def loss_fn(out, y):
        return (out - y).mean()

    h = torch.func.hessian(flat_loss(model, loss_fn, (x, y)))(params_vector(model))
    assert bool(h.abs().max() > 0) == two_layers     # the W2 W1 cross terms
    torch.testing.assert_close(dense_hessian_reference(model, loss_fn, (x, y)), h)


def test_the_paper_texts_folder_is_the_named_one_and_a_wrong_name_is_an_error(tmp_path):
    # the checks of the catalogue's quotes against the papers skip where no text is at hand;
    # a $SGDLAB_PAPERS naming a folder without one must not skip them silently
    from sgdlab.testing import paper_texts_folder

    named, beside, empty = tmp_path / "named", tmp_path / "beside", tmp_path / "empty"
    for d, files in ((named, ["a-2020.txt"]), (beside, ["b-2019.txt"]), (empty, ["x.pdf"])):
        d.mkdir()
        for f in files:
            (d / f).write_text("text\n")
    assert paper_texts_folder(str(named), beside) == named
    assert paper_texts_folder(None, beside) == beside
    assert paper_texts_folder("", beside) == beside
    assert paper_texts_folder(None, empty) is None
    assert paper_texts_folder(None, tmp_path / "absent") is None
    for wrong in (empty, tmp_path / "absent", named / "a-2020.txt"):
        with pytest.raises(ValueError, match="SGDLAB_PAPERS=.* is not a folder of paper texts"):
            paper_texts_folder(str(wrong), beside)


def test_a_unique_prefix_stops_one_character_past_what_another_run_shares(tmp_path):
    # two runs started in the same second share run_id[:-2] one time in 256
    with RunStore(tmp_path / "runs.sqlite") as store:
        a, b, c = (store.create_run({}, run_id=f"20261207-105503-{tail}", status="finished")
                   for tail in ("ab12", "ab34", "f000"))
    path = tmp_path / "runs.sqlite"
    assert [unique_prefix(r, path) for r in (a, b, c)] == [
        "20261207-105503-ab1", "20261207-105503-ab3", "20261207-105503-f"]
    with RunStore(path) as store:
        assert [store.get_run(unique_prefix(r, path))["id"] for r in (a, b, c)] == [a, b, c]
