"""Job spec, stage graph, cache keys, planner, scheduler, stage runner and memory watchdog.

Import the modules themselves (``ltx2.orchestrator.job``, ...): this package imports nothing, so that a stage
process, which needs only the runner's environment helpers, does not pay for the planner and the job schema.
"""
