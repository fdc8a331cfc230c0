"""Data: loaders, samplers, data factories, random windows, stateful positions, read-ahead.

An epoch's order is a function of (seed, epoch) (``SeededBatchSampler``); a
``TensorLoader`` serves batches as slices of tensors already on the device;
``RandomWindows`` draws token windows; ``per_epoch``/``per_validation`` build data per
epoch or validation run; the driver saves a stateful loader's position and reads
batches ahead onto the device. Private: the public names are exported from ``ftrain``.
"""
