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
