"""train: one trial, from its config to a trained CNN and an atomic `result.json`.

`frontend` (log-mel, normalization, SpecAugment as batched modules), `model`, `optim`, `metrics`,
`loop` (the one plain training loop), `runtime` (torch in the process: threads, kernels, checkpoints),
`engine` (build everything, train epoch by epoch), `trial` (a trial's records), and `fused/` (same-
shape trials trained as one model). Below: config, sweepdir, data.
"""
