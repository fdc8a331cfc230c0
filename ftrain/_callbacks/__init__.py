"""Callbacks: the ``Callback`` base and the built-in ones (early stopping, the
learning-rate monitor, ``Timer``, ``ThroughputMonitor``), and how the driver calls hooks.

Private: the public names are exported from ``ftrain``.
"""
