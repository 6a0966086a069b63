"""config: what a trial is, before anything runs (torch-free).

`schema` + `optim_schema` (the typed schema of every config group: each knob's type), `facts` (each
knob's range, fusability, identity and report title: the one table), `overrides` (the one override
parser, Hydra's grammar), `identity` (a trial's semantic config and its hash), `knobs` (the grid's
axes, a trial's params, the group LRs), `rules` (the rules every part builder enforces), `checks`
(every range and cross-field check), `planner` (a grid composed fast). Imports nothing else of gridtune.
"""
