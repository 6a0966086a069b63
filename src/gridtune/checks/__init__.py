"""checks: the one validation path every entry point runs before it creates anything, and what a grid
will cost before it runs.

`validation` (the path itself: config checks, builds, preflight; one line per problem, exit 2),
`builds` (every part built once on torch's meta device), `preflight` (the checks that need the data
or the cluster), `budget` (device-hours and wall time of a grid; launcher.max_gpu_hours), `costs`
(the cost model: measured epochs, setups, jobs), `probe` (`plan --probe`: measure them here).
Below: config, sweepdir, halving, slurm, data, train.
"""
