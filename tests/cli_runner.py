"""``cnnlab-train`` in the test process: the real Hydra entry point (argv parsing, run dirs,
callbacks, exit status) without the ~5 s a subprocess spends importing torch and Lightning."""

from __future__ import annotations

import sys

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from cnnlab.cli import train


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit status, stdout + stderr) of ``cnnlab-train *args``."""
    argv = sys.argv
    sys.argv = ["cnnlab-train", *args]
    code = 0
    try:
        train.cli()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = argv
        # Hydra leaves its singletons set; later in-process runs must not see this command's.
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    captured = capsys.readouterr()
    return code, captured.out + captured.err
