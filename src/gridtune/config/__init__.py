"""config: what a trial is, before anything runs (torch-free).

The typed schema of every config group (`schema`), each knob's facts (`knobs`: type, range, fusability,
identity, title), the one override parser (`overrides`, Hydra's grammar), trial identity (`identity`),
the rules every builder enforces (`rules`), every range and cross-field check (`checks`), and the
fast composition of a grid (`planner`). Imports nothing else of gridtune.
"""
