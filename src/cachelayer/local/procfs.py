"""Readers of /proc: a process's state letter and its peak resident memory."""

from __future__ import annotations

from pathlib import Path

STOPPED_OR_GONE = frozenset({"T", "t", "Z", "X", "?"})
"""State letters of a process that runs no more: stopped, traced, zombie, dead, or unknown."""


def process_state(pid: int) -> str:
    """The state letter of a process in /proc (``T`` when stopped), ``?`` when unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def peak_rss_mb(pid: int) -> int:
    """VmHWM of a live process, in MB (0 when /proc is not there)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0
