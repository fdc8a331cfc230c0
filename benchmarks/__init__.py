"""ftrain's benchmark suite: ftrain vs a hand-written PyTorch loop (vs Lightning if installed).

Run ``python -m benchmarks --help``. See ``docs/performance.md`` for what is measured
and the latest figures. Importing this package does not import ftrain: the hand
loop's peak-RSS process must not carry ftrain's footprint.
"""
