"""Job spec, stage graph, cache keys, subprocess runner and memory watchdog (built by the pipeline issue)."""

from .cache_keys import plan_keys, weight_identity
from .graph import Stage, plan_stages
from .job import Job, JobError, load_job, parse_job
