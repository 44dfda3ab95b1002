"""Job spec, stage graph, cache keys, subprocess runner and memory watchdog (built by the pipeline issue)."""
