"""``--backend`` and ``--timeout``: one definition for ``sgdlab parle`` and the torchrun entry
point."""
import argparse

from sgdlab.distributed_options import add_process_group_options


def _actions(p: argparse.ArgumentParser) -> dict:
    return {a.dest: a for a in p._actions if a.dest in ("backend", "timeout")}


def test_both_options_with_their_choices_defaults_and_help():
    p = argparse.ArgumentParser()
    add_process_group_options(p, "distributed")
    args = p.parse_args([])
    assert (args.backend, args.timeout) == ("auto", 60.0)
    assert p.parse_args(["--timeout", "2.5", "--backend", "gloo"]).timeout == 2.5
    actions = _actions(p)
    assert actions["backend"].choices == ["auto", "gloo", "nccl"]
    assert actions["timeout"].help.endswith("(distributed; default 60)")
    plain = argparse.ArgumentParser()
    add_process_group_options(plain)
    assert _actions(plain)["timeout"].help.endswith("fails (default 60)")
