"""Worker processes that die with their parent: a killed command leaves nothing running behind it.

A ``dfd-extract`` killed with SIGKILL used to leave its spawn workers (a gigabyte each, holding MTCNN) and
Python's resource tracker running, reparented to PID 1, after the rerun had finished. Nothing in the parent can
run when it is SIGKILLed, so each worker watches its parent itself:

* on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker the moment the thread that started
  it exits (pools and loaders here are started from the main thread);
* elsewhere (or if prctl fails), a daemon thread that exits the process once its parent is gone (checked every
  ``POLL_S``).

The resource tracker needs nothing: it exits when the last process holding its pipe (the parent and these
workers) is gone. Every process pool, ``multiprocessing.Process`` and DataLoader of dfd starts its workers with
:func:`die_with_parent` (a DataLoader ``worker_init_fn``) or :func:`start_worker` (a pool ``initializer``);
new commands (``dfd-embed``) should do the same.

This module imports nothing from dfd: every layer may use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5


def _pdeathsig(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent:
            os._exit(1)


def die_with_parent(_worker_id: int | None = None, parent: int | None = None) -> None:
    """Make this (worker) process end when its parent does; usable as a DataLoader ``worker_init_fn``.

    ``parent``: the parent's pid when known (a pool initializer gets it from the parent), so a parent that died
    before this call is noticed too; else the current parent.
    """
    parent = int(parent) if parent else os.getppid()
    if not _pdeathsig(signal.SIGKILL):
        threading.Thread(target=_watch, args=(parent,), name="dfd-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the watch was armed
        os._exit(1)


def start_worker(parent: int, init: str | Callable[..., Any] | None = None, *args: Any) -> None:
    """A pool ``initializer``: :func:`die_with_parent` (``parent`` = the pool owner's ``os.getpid()``), then
    ``init(*args)``. ``init`` may be named ``"module:function"``: a spawned worker unpickles its initializer's
    arguments before running it, so a heavy module (torch, MTCNN) named by a string is imported only once the
    watch is armed (the window in which a killed parent goes unnoticed stays short)."""
    die_with_parent(parent=parent)
    if isinstance(init, str):
        import importlib

        module, _, name = init.partition(":")
        init = getattr(importlib.import_module(module), name)
    if init is not None:
        init(*args)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux: its state in /proc; else a signal 0 probe)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (Linux /proc; [] elsewhere): what a killed command may leave behind."""
    kids: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out
