"""halving: successive halving over a grid.

`policy` (the rungs and each rung's decision from the trials' records, the ladder file), `noise` (the
margin a rung value can be trusted to), `ladder` (runs a grid rung by rung through the sweeper's
launcher). Below: config, sweepdir.
"""
