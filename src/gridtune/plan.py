"""`python -m gridtune.plan <same args as gridtune.sweep>`: a dry run of a sweep.

It composes and validates every trial exactly as the sweep driver would (same sweeper, same
checks), then prints the trial count, which trials are already done and will be skipped, and the
estimated cost in clip-epochs, and launches nothing. Exit code 2 when the grid is invalid.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    args = [a for a in args if a not in ("-m", "--multirun")]
    sys.argv = [sys.argv[0], "-m", *args, "hydra.sweeper.dry_run=true"]
    from .sweep import main as sweep_main
    sweep_main()


if __name__ == "__main__":
    main()
