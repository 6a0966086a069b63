"""launch: the sweep driver's steps, which the Hydra sweeper (hydra_plugins/gridtune_sweeper) runs in
order: `grid` (the grid expanded, every trial composed and checked, what is already done), `show`
(what the driver prints before it launches: the plan, the dry run's list), `jobs` (the manifest, the
configs and chunks of a launch, what came back). Below: every wing but use and report.
"""
