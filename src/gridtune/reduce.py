"""`python -m gridtune.reduce <sweep_dir>`: the reducer's command; it lives in `gridtune.report.reduce`.

    python -m gridtune.reduce <sweep_dir> [--objective val/acc] [--mode max|min] [--top N]
                              [--no-plots] [--tracking none|wandb]
"""
from __future__ import annotations

import sys

from gridtune.report.reduce import main, reduce_sweep

__all__ = ["main", "reduce_sweep"]

if __name__ == "__main__":
    sys.exit(main())
