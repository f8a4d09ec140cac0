"""Stage entry points: one module per workflow rule family, each the whole job of its rules.

Scripts under ``workflow/scripts`` only unpack ``snakemake.input/params/output`` and call a
``run_*`` function of one module here. A rule's ``code_version`` is the hash of the package
modules in its entry point's import closure (:mod:`grokking_llc.pipeline.versions`), so each entry
point
imports exactly what decides its outputs.

This ``__init__`` holds only :func:`setup_job`, which changes no output (logging, threads).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def setup_job(log_path: str | os.PathLike | None, threads: int = 1) -> None:
    """Send logging (and stderr) of a workflow job to its log file; use ``threads`` threads.

    Called first by every script, before it imports its stage module, so ``--cores N`` never
    oversubscribes the machine: the thread count goes to the environment, where torch reads it
    when a stage imports it (and to torch directly if it is already loaded). Jobs that never need
    torch (splits, tables, figures) do not pay for importing it.
    """
    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stderr = stream
        handlers = [logging.StreamHandler(stream)]
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
