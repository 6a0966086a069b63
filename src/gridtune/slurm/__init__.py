"""slurm: the one view of the SLURM cluster.

`cluster` (what the cluster offers, from one `sinfo` query; whether a request fits), `arrays` (a launch's
jobs as arrays that fit MaxArraySize and MaxSubmitJobs), `view` (squeue and sacct for one sweep).
Below: config, sweepdir.
"""
