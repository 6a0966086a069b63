"""Hydra discovers the gridtune sweeper here (hydra_plugins is its namespace for plugins)."""
