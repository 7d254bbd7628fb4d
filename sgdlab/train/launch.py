"""torchrun as ``sgdlab parle --mode distributed`` starts it, with its failures in brief.

    python -m sgdlab.train.launch TORCHRUN-ARGS...

runs ``torch.distributed.run`` with those arguments in this process. A replica process that
fails has printed its own error (its stderr is this process's); torchrun then raised
``ChildFailedError``, whose traceback through torchrun's own code said nothing more than
the failure it ends with. Here that error prints as one line per failed rank (its exit code
or signal, and the first line of the error it recorded, where it recorded one) and the
process exits 1, as torchrun does.
"""
from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import Any

# the launch's exit status on a failed replica: torchrun's own (an uncaught exception)
FAILED = 1
NOT_AVAILABLE = "<N/A>"     # torchrun's error_file where the rank wrote none


def _first_line(message: Any) -> str:
    """The first non-blank line of a failure's recorded error (a string, or a mapping holding
    one under ``message``, as torchrun's error files do); "" for none."""
    if isinstance(message, dict):
        message = message.get("message", "")
    return next((ln.strip() for ln in str(message or "").splitlines() if ln.strip()), "")


def failure_lines(error: Any) -> list[str]:
    """A ``ChildFailedError`` as lines: what failed, then each failed rank, those that failed
    of their own first (the earliest first), those torchrun then stopped (SIGTERM) last:
    ``rank 1 (pid 4242): exit code 1: RuntimeError: ...`` (the first line of the error the
    rank recorded, where it recorded one), ``rank 0 (pid 4241): killed by SIGKILL``."""
    failures = dict(error.failures)

    def stopped(rank: int) -> bool:
        return failures[rank].exitcode == -signal.SIGTERM

    own = any(not stopped(r) for r in failures)
    lines = [f"torchrun: {error.name} failed:"]
    for rank in sorted(failures, key=lambda r: (stopped(r), failures[r].timestamp, r)):
        f = failures[rank]
        if f.exitcode < 0:
            try:
                how = f"killed by {signal.Signals(-f.exitcode).name}"
            except ValueError:
                how = f"killed by signal {-f.exitcode}"
            if stopped(rank) and own:
                how += " (torchrun stops the other processes once one fails)"
        else:
            how = f"exit code {f.exitcode}"
        # without an error file (torchrun's "<N/A>") its message is a link to its docs or
        # the signal again, not the error
        said = _first_line(f.message) if f.error_file not in ("", NOT_AVAILABLE) else ""
        lines.append(f"  rank {rank} (pid {f.pid}): {how}" + (f": {said}" if said else ""))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(list(sys.argv[1:] if argv is None else argv)))
    except ChildFailedError as e:
        print("\n".join(failure_lines(e)), file=sys.stderr)
        return FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
