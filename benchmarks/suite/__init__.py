"""asv benchmarks of fastmlr: kernels, stages, end to end, and cold start.

Run in the current environment with ``asv run --python=same --quick`` (a smoke test:
every benchmark once) or without ``--quick`` for timings.  Set ``FASTMLR_ASV_LARGE=1``
to add the demo-scale sizes.
"""
