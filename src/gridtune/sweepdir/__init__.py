"""sweepdir: a sweep directory on disk and in W&B: the one reader and writer of its records.

`records` (file names, statuses, atomic writes, tolerant reads), `claims` (who runs a trial),
`rundir` (what one run directory's files say: its state), `ledger` (which trials a sweep holds and
what happened to each: the reader every command uses) and `tracking` (the one place that talks to
Weights & Biases). Below: config.
"""
