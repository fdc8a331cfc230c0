"""One variant's training in a fresh process, printing its peak memory as JSON.

Run by ``_measure.peak_rss``; the hand loop's process never imports ftrain.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile


def peak_rss_mib() -> float:
    """This process's peak resident set size.

    ``VmHWM`` of /proc/self/status, where there is one: ``ru_maxrss`` would report the
    parent's peak, since Linux carries it across fork and exec.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> None:
    args = json.loads(argv[0])
    import torch

    torch.set_num_threads(args["threads"])
    from ._runners import run_variant
    from ._workloads import SETTINGS, WORKLOADS, make_data

    device = torch.device(args["device"])
    workload = WORKLOADS[args["workload"]]
    settings = SETTINGS[args["config"]].for_quick(args["quick"])
    batches, epochs = workload.schedule(args["quick"])
    data = make_data(workload, batches, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="ftrain-bench-rss-") as tmp:
        run_variant(args["variant"], workload, settings, data, epochs, tmp, device)
    out = {
        "peak_rss_mib": peak_rss_mib(),
        "ftrain_imported": "ftrain" in sys.modules,
    }
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
