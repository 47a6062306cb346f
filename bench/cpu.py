"""CPU time of processes read from ``/proc``: a process tree's, and the local RabbitMQ's.

The VM has no hardware counters, so the benchmarks stand CPU time in for instructions.
The kernel counts it in clock ticks (10 ms at 100 Hz): a sample is off by up to one tick
per busy process, which runs of a second or more keep to a few percent. Linux only.
"""

from __future__ import annotations

import os


def stat_ticks(stat: str) -> int:
    """utime + stime + cutime + cstime from a ``/proc/<pid>/stat`` line, in clock ticks.

    The command name (field 2) may hold spaces and parentheses, so fields are counted
    from the last ``)``: after it come state (field 3) ... utime (14) to cstime (17).
    """
    fields = stat[stat.rindex(")") + 2:].split()
    return sum(int(f) for f in fields[11:15])


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    kids: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids += [int(k) for k in fh.read().split()]
        except FileNotFoundError:  # the thread ended, or a kernel without the file
            continue
    return kids


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants, living or reaped."""
    ticks, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/stat") as fh:
                ticks += stat_ticks(fh.read())
        except (FileNotFoundError, ProcessLookupError):  # gone between listing and reading
            continue
        todo += _children(current)
    return ticks / os.sysconf("SC_CLK_TCK")


def broker_pid() -> int | None:
    """RabbitMQ's Erlang VM on this machine, or None (a broker elsewhere, or not RabbitMQ)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == "beam.smp":
                        return int(entry)
            except OSError:
                continue
    return None
