"""wirecheck benchmarks: ratios against baselines measured in the same run.

Each module is runnable (``python -m benchmarks.transport``) and exposes ``main(argv=None) -> int``
for ``wirecheck bench NAME``. Benchmarks are not tests: they never fail a CI job on timing; a
smoke test only checks that they run and print their table.
"""
