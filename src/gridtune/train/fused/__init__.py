"""train.fused: several same-shape trials trained as one model on one device.

`grouping` (which trials fuse, and when fusion is on), `model` (B CNNs as one forward pass), `loop`
(the training loop for B models at once), `job` (a job's chunk of trials, fused where they can be).
"""
