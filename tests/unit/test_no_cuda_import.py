"""Importing every llmjobs module must leave CUDA uninitialised."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import importlib, pkgutil, sys
import llmjobs
failed = []
for module in pkgutil.walk_packages(llmjobs.__path__, "llmjobs."):
    # Alembic's env.py and revisions run only inside alembic, which provides their context.
    if module.name.startswith("llmjobs.migrations."):
        continue
    try:
        importlib.import_module(module.name)
    except ImportError as error:
        failed.append(f"{module.name}: {error}")
import torch
print("cuda-initialized", torch.cuda.is_initialized())
print("failed", failed)
"""


def test_import_all_modules_leaves_cuda_uninitialised() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True
    )
    assert "cuda-initialized False" in completed.stdout, completed.stdout
    assert "failed []" in completed.stdout, completed.stdout
