"""``cnnlab-train`` (and the other Hydra entry points) in the test process: the real entry point
(argv parsing, run dirs, callbacks, exit status) without the ~5 s a subprocess spends importing
torch and Lightning."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from cnnlab.cli import train


def call_entry_point(entry: Callable[[], object], argv: list[str]) -> int:
    """The exit status of ``entry()`` run with ``sys.argv = argv`` (output is not captured)."""
    saved = sys.argv
    sys.argv = list(argv)
    code = 0
    try:
        entry()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved
        # Hydra leaves its singletons set; later in-process runs must not see this command's.
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    return code


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit status, stdout + stderr) of ``cnnlab-train *args``."""
    code = call_entry_point(train.cli, ["cnnlab-train", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err
