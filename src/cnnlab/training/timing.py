"""The clock of start-up times: how long ago this process started (no heavy imports here, so a
child process can ask cheaply)."""

from __future__ import annotations

import os
import time


def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc), or None where that is unknown.

    The start is field 22 of /proc/self/stat, in clock ticks since boot; it is compared with the
    clock the kernel counts it on (CLOCK_BOOTTIME), not with the wall clock: /proc/stat's boot
    time is rounded to whole seconds, which would put up to a second of error into the result.
    """
    try:
        with open("/proc/self/stat") as f:
            # The command name in field 2 may hold spaces, so count from the closing parenthesis.
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return since_boot - start_ticks / os.sysconf("SC_CLK_TCK")
