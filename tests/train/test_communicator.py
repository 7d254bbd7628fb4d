"""The all-reduce communicator of the replica trainer (sgdlab.train.communicator)."""
import pytest
import torch

from sgdlab.testing import run_threads
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


def _on_threads(fn, world=3):
    """``fn(comm)`` on ``world`` threads: each rank's result or exception."""
    return run_threads(lambda rank, comm: fn(comm), world)


def _assert_others_told(got, failing, said):
    """Every rank of ``got`` but ``failing`` raised :class:`ReplicaFailed` naming it and its
    account ``said``."""
    from sgdlab.train.communicator import ReplicaFailed

    world = len(got)
    for r in set(range(world)) - {failing}:
        assert type(got[r]) is ReplicaFailed and got[r].rank == failing
        assert str(got[r]) == f"replica {r}/{world}: rank {failing} failed {said}; stopped with it"


def test_a_status_all_reduce_tells_every_rank_which_rank_failed_where_and_how():
    """Rank 1's error (non-ASCII text included) reaches ranks 0 and 2 whole, naming rank 1
    and where it failed; rank 1 raises its own; a UserError makes the others refuse too."""
    from sgdlab.errors import UserError
    from sgdlab.train.communicator import ReplicaRefused, status_all_reduce

    mine = OSError("disk full at x̄ — écriture")

    def fails_on_1(comm):
        return status_all_reduce(comm, f"writing rank{comm.rank}.pt",
                                 mine if comm.rank == 1 else None)
    got = _on_threads(fails_on_1)
    assert got[1] is mine
    _assert_others_told(got, 1, "writing rank1.pt (OSError: disk full at x̄ — écriture)")
    refusal = UserError("bad folder")
    got = _on_threads(lambda comm: status_all_reduce(comm, "taking OUT",
                                                     refusal if comm.rank == 2 else None))
    assert got[2] is refusal and all(isinstance(g, ReplicaRefused) and isinstance(g, UserError)
                                     for g in got[:2])
    assert "rank 2 failed taking OUT (UserError: bad folder)" in str(got[0])


def test_a_status_all_reduce_says_whether_any_rank_diverged_and_names_the_lowest_failure():
    from sgdlab.train.communicator import ReplicaFailed, status_all_reduce

    assert _on_threads(lambda c: status_all_reduce(c, "x")) == [False] * 3
    assert _on_threads(lambda c: status_all_reduce(c, "x", diverged=c.rank == 0)) == [True] * 3
    errors = [None, RuntimeError("one"), RuntimeError("two")]
    got = _on_threads(lambda c: status_all_reduce(c, f"step {c.rank}", errors[c.rank]))
    assert got[1] is errors[1] and got[2] is errors[2]
    assert isinstance(got[0], ReplicaFailed) and "rank 1 failed step 1 (RuntimeError: one)" in (
        str(got[0]))


def test_a_status_all_reduce_in_process_raises_the_error_and_sends_nothing():
    from sgdlab.train.communicator import status_all_reduce

    with pytest.raises(KeyError, match="k"):
        status_all_reduce(None, "x", KeyError("k"))
    assert status_all_reduce(None, "x") is False


def test_a_long_account_is_cut_at_whole_characters_and_keeps_the_error_after_a_long_where():
    """The others are told at most 480 UTF-8 bytes: a non-ASCII message is cut at a whole
    character (no U+FFFD), a long ``where`` (a deep folder) leaves room for the error, and an
    error without a message says its type alone."""
    from sgdlab.train.communicator import STATUS_TEXT, status_all_reduce

    def told(where, error):
        got = _on_threads(lambda c: status_all_reduce(c, where, error if c.rank == 1 else None),
                          world=2)
        assert got[1] is error
        text = str(got[0]).removeprefix("replica 0/2: rank 1 failed ")
        return text.removesuffix("; stopped with it")

    said = told("x", RuntimeError("é" * 600))
    assert said.startswith("x (RuntimeError: éé") and said.endswith("é…")
    assert "\ufffd" not in said and len(said.encode()) <= STATUS_TEXT
    folder = "/a-long-folder" * 80
    said = told(f"taking {folder} for this run", OSError("no space left"))
    assert "(OSError: no space left)" in said and said.startswith("taking /a-long-folder")
    assert len(said.encode()) <= STATUS_TEXT and "…" in said
    assert told("x", RuntimeError()) == "x (RuntimeError)"
    # a long where keeps a third of the bytes; an account of exactly 480 bytes is told whole
    assert len(said.split(" (OSError")[0].encode()) == STATUS_TEXT // 3
    whole = "x (RuntimeError: " + "a" * (STATUS_TEXT - 18) + ")"
    assert len(whole.encode()) == STATUS_TEXT
    assert told("x", RuntimeError("a" * (STATUS_TEXT - 18))) == whole


def test_told_all_reports_a_rank_0_failure_to_every_rank_and_a_success_returns():
    """``with told_all(comm, where): work``: rank 0's error reaches every rank with its
    message and ``where`` (rank 0 raises its own, its ``error`` kept); when no rank fails the
    block ends normally on each and every rank goes on past the all-reduce."""
    from sgdlab.train.communicator import told_all

    mine = ValueError("no store at /x")

    def rank_0_fails(comm):
        told = told_all(comm, "opening the run store")
        try:
            with told:
                if comm.rank == 0:
                    raise mine
        except ValueError:
            assert told.error is mine
            raise
        return "went on"
    got = _on_threads(rank_0_fails)
    assert got[0] is mine
    _assert_others_told(got, 0, "opening the run store (ValueError: no store at /x)")

    def succeeds(comm):
        with told_all(comm, "opening the run store") as told:
            done = comm.rank
        return done, told.error
    assert _on_threads(succeeds) == [(0, None), (1, None), (2, None)]


def test_told_all_in_process_raises_the_error_and_lets_an_interrupt_pass_untold():
    """``comm`` None: the work's error is raised as it is. An interrupt (no ``Exception``)
    stops this process alone: raised without the all-reduce, whose ``settle`` never runs."""
    from sgdlab.train.communicator import told_all

    with pytest.raises(KeyError, match="k"), told_all(None, "x"):
        raise KeyError("k")
    with told_all(None, "x") as told:
        pass
    assert told.error is None
    settled = []
    with pytest.raises(KeyboardInterrupt), told_all(None, "x",
                                                     settle=lambda *a: settled.append(a)):
        raise KeyboardInterrupt
    assert settled == []


# --- the collectives, on a stand-in torch.distributed ------------------------------------
def _rank_1_of_3():
    """Rank 1 of 3 (no process group: the collectives are patched in the tests)."""
    comm = object.__new__(TorchDistributedCommunicator)
    comm.group, comm.rank, comm.world_size, comm.rounds = None, 1, 3, 0
    return comm


def test_average_is_the_mean_over_the_ranks_of_each_tensor_in_order_and_shape(monkeypatch):
    """The all-reduce sums this rank's flat buffer with the other two ranks' (known numbers
    here): ``average`` gives each tensor's mean over the three ranks, by hand, in the
    tensors' order and shapes, and leaves this rank's tensors alone."""
    import torch.distributed as dist

    others = [torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0], dtype=torch.float64),
              torch.tensor([-1.0, 5.0, 0.5, 2.0, 8.0], dtype=torch.float64)]

    def all_reduce(flat, op=None, group=None):
        assert op == dist.ReduceOp.SUM
        for o in others:
            flat.add_(o)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    comm = _rank_1_of_3()
    mine = [torch.tensor([1.0, 2.0], dtype=torch.float64),
            torch.tensor([[3.0], [4.0]], dtype=torch.float64),
            torch.tensor(6.0, dtype=torch.float64)]
    got = comm.average(mine)
    assert [g.shape for g in got] == [m.shape for m in mine]
    assert got[0].tolist() == [(1 + 10 - 1) / 3, (2 + 20 + 5) / 3]
    assert got[1].tolist() == [[(3 + 30 + 0.5) / 3], [(4 + 40 + 2) / 3]]
    assert got[2].item() == (6 + 50 + 8) / 3
    assert mine[0].tolist() == [1.0, 2.0] and comm.rounds == 1
    # the replica trainer's reducer: the anchors' mean and the mean replica loss
    master, loss = comm.reduce_round([mine[:2]], [torch.tensor(6.0)])
    assert master[0].tolist() == got[0].tolist() and loss == got[2].item()
    assert comm.rounds == 2


def test_broadcast_overwrites_every_tensor_with_the_source_rank_s(monkeypatch):
    import torch.distributed as dist

    seen = []

    def broadcast(flat, src=None, group=None):
        seen.append(src)
        flat.copy_(torch.arange(1.0, 1.0 + flat.numel()))    # rank src's values
    monkeypatch.setattr(dist, "broadcast", broadcast)
    tensors = [torch.zeros(2, 2), torch.zeros(1)]
    _rank_1_of_3().broadcast_(tensors, src=2)
    assert seen == [2]
    assert tensors[0].tolist() == [[1.0, 2.0], [3.0, 4.0]] and tensors[1].tolist() == [5.0]


def test_a_failed_collective_names_this_rank_the_collective_and_the_first_line(monkeypatch):
    import torch.distributed as dist

    from sgdlab.train.communicator import ReplicaCommunicationError

    def lost(*args, **kwargs):
        raise RuntimeError("Connection closed by peer [10.0.0.2]:29500\nException raised from")
    monkeypatch.setattr(dist, "all_reduce", lost)
    monkeypatch.setattr(dist, "broadcast", lost)
    comm = _rank_1_of_3()
    said = ("another replica process probably died or hung (RuntimeError: Connection closed "
            "by peer [10.0.0.2]:29500)")
    with pytest.raises(ReplicaCommunicationError) as e:
        comm.average([torch.zeros(2)])
    assert str(e.value) == f"replica 1/3: all-reduce #1 failed — {said}"
    with pytest.raises(ReplicaCommunicationError) as e:
        comm.broadcast_([torch.zeros(2)])
    assert str(e.value) == f"replica 1/3: broadcast of the initial weights failed — {said}"


def test_a_status_all_reduce_over_49_processes_reads_every_code_and_byte_exactly():
    """The mean over the ranks times the world size gives back each rank's row, rounded:
    in float64 (1/49)·49 = 0.999…, so without the rounding rank 48's divergence (code 1)
    read as 0 and its account lost the bytes 1, 2, 4, 8, 16, 27, 32, 54, 55, 64, ...
    The other 48 ranks' rows are simulated (zeros: each of them went fine)."""
    from sgdlab.train.communicator import ReplicaFailed, status_all_reduce

    class Rank0Of49:
        world_size, rank = 49, 0

        def __init__(self, last_row):
            self.last_row = last_row

        def average(self, tensors):
            (rows,) = tensors
            rows = rows.clone()
            rows[48] = self.last_row(rows.shape[1])
            return [rows / 49]

    def diverged(width):
        row = torch.zeros(width, dtype=torch.float64)
        row[0] = 1
        return row
    assert status_all_reduce(Rank0Of49(diverged), "round 3") is True
    said = "step 7 (OSError: \x01\x02\x04\x08\x10 @67)"    # bytes 1, 2, 4, ..., 64, 54, 55

    def failed(width):
        row = torch.zeros(width, dtype=torch.float64)
        row[0] = 2
        row[1:1 + len(said.encode())] = torch.tensor(list(said.encode()), dtype=torch.float64)
        return row
    with pytest.raises(ReplicaFailed) as e:
        status_all_reduce(Rank0Of49(failed), "round 3")
    assert e.value.rank == 48
    assert str(e.value) == f"replica 0/49: rank 48 failed {said}; stopped with it"


class _Recorded:
    """A stand-in communicator of rank 0 of 2 that records its all-reduces, or raises
    ``lost`` (a peer gone) from them."""
    world_size, rank = 2, 0

    def __init__(self, lost=None):
        self.calls, self.lost = 0, lost

    def average(self, tensors):
        self.calls += 1
        if self.lost is not None:
            raise self.lost
        return [t / 2 for t in tensors]


def test_a_status_all_reduce_lets_an_interrupt_stop_this_process_alone():
    # an interrupt is raised at once, also with a communicator: no all-reduce is sent
    from sgdlab.train.communicator import status_all_reduce

    comm = _Recorded()
    with pytest.raises(KeyboardInterrupt):
        status_all_reduce(comm, "x", KeyboardInterrupt())
    assert comm.calls == 0


def test_a_lost_peer_in_the_status_all_reduce_leaves_this_process_its_own_error():
    # this process' own error says more than the lost peer; without one, the loss is raised
    from sgdlab.train.communicator import ReplicaCommunicationError, status_all_reduce

    lost = ReplicaCommunicationError("replica 0/2: all-reduce #3 failed")
    mine = OSError("disk full")
    with pytest.raises(OSError, match="disk full") as e:
        status_all_reduce(_Recorded(lost), "writing rank0.pt", mine)
    assert e.value is mine
    with pytest.raises(ReplicaCommunicationError, match="all-reduce #3"):
        status_all_reduce(_Recorded(lost), "writing rank0.pt")
