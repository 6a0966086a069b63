"""checks: the one validation path every entry point runs before it creates anything.

`validation` (the path itself: config checks, builds, preflight; one line per problem, exit 2),
`builds` (every part built once on torch's meta device), `preflight` (the checks that need the data
or the cluster). Below: config, sweepdir, slurm, data, train.
"""
