"""gridtune: grid-search an audio CNN's hyperparameters with Hydra multirun, locally or on SLURM.

Entry points: `python -m gridtune.sweep` (trials and grids), `gridtune.reduce` (leaderboard, report,
best.yaml), `gridtune.final` (retrain the winner), `gridtune.status`, `gridtune.plan`, `gridtune.lr_find`,
`gridtune.data.demo`. This package imports nothing heavy on import.
"""
__version__ = "0.1.0"
