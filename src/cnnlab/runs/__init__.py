"""Run bookkeeping: a run directory's files (results.json, checkpoints), continuing runs, sweeps,
and the report over a set of runs."""
