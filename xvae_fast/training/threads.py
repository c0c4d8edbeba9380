"""CPU threads on a shared machine. torch's intra-op threads wait for each other at every op, so when
another job holds a core they run at the pace of the slowest: on this project's 2-core CPU an MNIST
training step took 223 ms with 2 threads and one core busy, against 103 ms with 1 thread
(`bench/busy_machine.py`). The trainer does not change the thread count by itself (a count that
followed the load would change a run's float summation order from one invocation to the next); it
says so when the load average shows the machine is busy."""
from __future__ import annotations

import os
from typing import Optional


def oversubscription_warning(load: float, cores: int, threads: int) -> Optional[str]:
    """A warning when `threads` torch threads meet a 1-minute load average of `load` on `cores`
    cores (before this run starts its own work), else None."""
    busy = int(load + 0.25)            # cores other jobs keep busy (a job at 0.8 counts)
    free = max(1, cores - busy)
    if busy < 1 or threads <= free:
        return None
    return (f"the load average is {load:.2f} on {cores} CPU cores: other jobs hold about {busy}, and "
            f"torch's {threads} threads will wait on them at every op (an MNIST step measured 2.2x "
            f"slower with one core taken, bench/busy_machine.py); --threads {free} runs at the free "
            "cores' pace")


def check_load(threads: int) -> Optional[str]:
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):       # not on every platform
        return None
    return oversubscription_warning(load, os.cpu_count() or 1, threads)
