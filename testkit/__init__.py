"""Real fixtures shared by the tests and the benchmarks: local servers, trained-looking models.

The tests and ``bench/`` both import from here; no module outside ``tests/`` imports ``tests``,
and none of the project's packages imports ``testkit``.
"""
