"""The all-reduce communicator of the replica trainer (sgdlab.train.communicator)."""
import torch

from sgdlab.train.communicator import TorchDistributedCommunicator


def test_reduce_round_puts_the_loss_in_the_anchors_dtype_and_device(monkeypatch):
    # the all-reduce itself is the identity here (one process): what is checked is the flat
    # buffer it is handed, which must be one tensor in the anchors' dtype and on their device
    comm = object.__new__(TorchDistributedCommunicator)
    seen = []

    def identity(flat):
        seen.append(flat)
        return flat
    monkeypatch.setattr(comm, "_all_reduce_mean", identity)
    anchors = [torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([[3.0]],
                                                                             dtype=torch.float64)]
    loss = torch.tensor(0.1, dtype=torch.float32)
    master, mean_loss = comm.reduce_round([anchors], [loss])
    (flat,) = seen
    assert flat.dtype == torch.float64 and flat.device == anchors[0].device
    assert [m.tolist() for m in master] == [[1.0, 2.0], [[3.0]]]
    assert mean_loss == float(loss)
