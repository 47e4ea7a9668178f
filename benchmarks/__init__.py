"""Load tests, sweeps and reports."""
