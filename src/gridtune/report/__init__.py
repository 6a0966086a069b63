"""Reports of a sweep, from its records alone: ranking (`leaderboard`), text tables (`render`), the
self-contained page (`html`), best.yaml (`best`), the figures (`plots/`) and the command that writes
them all (`reduce`, run as `python -m gridtune.reduce`). The sweep is read through
`gridtune.sweepdir.ledger`. Nothing in this package imports torch, so a sweep reduces on a login node.
"""
