"""The environment's processes: start them in their own groups, watch, signal, freeze, reap."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Callable, Dict, List, Mapping, Optional

import attrs

from cachelayer.local.api import Sandbox
from cachelayer.local.procfs import STOPPED_OR_GONE, process_state
from cachelayer.local.reports import Crash

FREEZE_WAIT_S = 1.0
"""How long ``freeze`` waits to see every process stopped (SIGSTOP is asynchronous)."""


@attrs.define
class ManagedProcess:
    """One process the emulator started: an extension or the runtime, and how it ended."""

    name: str
    role: str  # "extension" | "runtime"
    popen: subprocess.Popen[bytes]
    exit_code: Optional[int] = None
    expected_exit: bool = False

    @property
    def alive(self) -> bool:
        return self.exit_code is None

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process's group (its children too)."""
        # The group may be gone already (it exited, or was killed at shutdown).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


class ProcessTable:
    """The processes of the current environment, each writing to ``log_path(name)``.

    Exits are recorded under the sandbox's ``cond``: an exit nobody asked for becomes a
    ``Crash``. ``on_spawn(name, pid)`` is called right after each process starts.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        log_path: Callable[[str], Path],
        on_spawn: Optional[Callable[[str, int], None]] = None,
    ) -> None:
        self._sandbox = sandbox
        self._log_path = log_path
        self._on_spawn = on_spawn
        self._log_files: Dict[str, IO[bytes]] = {}
        self.processes: List[ManagedProcess] = []
        self.crashes: List[Crash] = []

    def spawn(
        self, name: str, role: str, argv: List[str], env: Mapping[str, str], cwd: Path
    ) -> ManagedProcess:
        """Start ``argv`` in its own process group, stdout and stderr to its log."""
        with self._sandbox.cond:
            self._sandbox.note("spawn", name)
        log = self._log_files.get(name)
        if log is None:
            # One file per process name, open across re-inits, so no `with`.
            log = open(self._log_path(name), "ab", buffering=0)  # noqa: SIM115 - close_logs() closes it
            self._log_files[name] = log
        popen = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group, so freeze/kill reaches its children too.
            start_new_session=True,
        )
        proc = ManagedProcess(name, role, popen)
        self.processes.append(proc)
        if self._on_spawn:
            self._on_spawn(name, popen.pid)
        threading.Thread(
            target=self._watch, args=(proc,), name=f"watch-{name}", daemon=True
        ).start()
        return proc

    def _watch(self, proc: ManagedProcess) -> None:
        code = proc.popen.wait()
        with self._sandbox.cond:
            proc.exit_code = code
            self._sandbox.note("exit", proc.name)
            if not proc.expected_exit:
                self.crashes.append(Crash(proc.name, code, self._sandbox.phase))
            self._sandbox.cond.notify_all()

    def alive(self) -> List[ManagedProcess]:
        return [p for p in self.processes if p.alive]

    def unexpected_exit(self) -> Optional[ManagedProcess]:
        """The first process that exited while nobody asked it to (caller holds ``cond``)."""
        for proc in self.processes:
            if not proc.alive and not proc.expected_exit:
                return proc
        return None

    def signal(self, sig: int, role: Optional[str] = None) -> None:
        """Send ``sig`` to every live process group (of ``role`` only, when given)."""
        for proc in self.alive():
            if role is None or proc.role == role:
                proc.signal_group(sig)

    def freeze(self) -> None:
        """SIGSTOP every process group; return once they are seen stopped (or after a second)."""
        self.signal(signal.SIGSTOP)
        deadline = time.monotonic() + FREEZE_WAIT_S
        pending = self.alive()
        while pending and time.monotonic() < deadline:
            pending = [
                p for p in pending if p.alive and process_state(p.popen.pid) not in STOPPED_OR_GONE
            ]
            if pending:
                time.sleep(0.001)

    def reap(self, procs: List[ManagedProcess]) -> None:
        """SIGKILL the groups of ``procs``, wait for each, record their exit codes."""
        for proc in procs:
            # Kill the whole group: a leader that exited may have left children behind.
            proc.signal_group(signal.SIGKILL)
        for proc in procs:
            proc.popen.wait()
        with self._sandbox.cond:
            # The watcher threads may lag behind wait(); their codes are the same.
            for proc in procs:
                proc.exit_code = proc.popen.returncode

    def clear(self) -> None:
        """Forget the processes (they are reaped): the next init starts a new set."""
        self.processes = []

    def close_logs(self) -> None:
        """Close every process's log file."""
        for log in self._log_files.values():
            log.close()
        self._log_files.clear()
