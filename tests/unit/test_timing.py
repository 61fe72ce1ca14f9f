"""The start-up clock behind ``startup_s`` (results.json, ``make bench``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnlab.training.timing import process_age

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def test_process_age_lies_between_what_the_child_slept_and_what_the_parent_waited() -> None:
    # The child's age when it reports must be at least its sleep and at most the parent's whole
    # wait; a clock built on /proc/stat's whole-second boot time misses this by up to 1 s.
    code = (
        "import time; time.sleep(0.6); from cnnlab.training.timing import process_age; "
        "print(process_age())"
    )
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    waited = time.monotonic() - started
    age = float(out.stdout)
    assert 0.6 <= age <= waited + 0.02  # 0.02: the kernel counts the start in 10 ms ticks


def test_process_age_of_this_process_grows() -> None:
    first = process_age()
    assert first is not None and first > 0
    time.sleep(0.05)
    assert process_age() >= first + 0.04
