#!/usr/bin/env python3
"""Where a process's main thread spends wall-clock time: sample /proc/<pid>/syscall.

Usage: waits.py PID SECONDS [INTERVAL_MS]

Every INTERVAL_MS (default 5) reads the main thread's state: on CPU ("running"),
or blocked in a system call (poll = libpq waiting for PostgreSQL, futex = a
condition variable, i.e. nats.c: a fetch or a JetStream ack, ...). Prints one
line per state, most frequent first, as a share of the samples. perf record
shows where CPU time goes; this shows where the rest of the time goes.
"""
import collections
import sys
import time

# x86_64 numbers of the calls a libpq / nats.c program blocks in.
SYSCALLS = {
    0: "read", 1: "write", 7: "poll", 23: "select", 35: "nanosleep", 44: "sendto",
    45: "recvfrom", 46: "sendmsg", 47: "recvmsg", 74: "fsync", 75: "fdatasync",
    202: "futex", 228: "clock_gettime", 230: "clock_nanosleep", 232: "epoll_wait",
    270: "pselect6", 271: "ppoll", 281: "epoll_pwait", 441: "epoll_pwait2",
}
MEANING = {
    "poll": "libpq: waiting for PostgreSQL (query / commit)",
    "ppoll": "waiting on a socket",
    "futex": "condition variable: nats.c fetch / publish-ack wait, or a lock",
    "running": "on CPU or runnable",
    "recvfrom": "reading a socket",
    "sendto": "writing a socket",
    "clock_nanosleep": "sleeping",
    "nanosleep": "sleeping",
}


def sample(pid):
    try:
        with open(f"/proc/{pid}/syscall") as f:
            text = f.read().split()
    except OSError:
        return None
    if not text:
        return "unknown"
    if text[0] == "running":
        return "running"
    try:
        nr = int(text[0])
    except ValueError:
        return text[0]
    if nr < 0:
        return "running"
    return SYSCALLS.get(nr, f"syscall {nr}")


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    pid, seconds = int(sys.argv[1]), float(sys.argv[2])
    interval = (float(sys.argv[3]) if len(sys.argv) > 3 else 5.0) / 1000.0
    counts = collections.Counter()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = sample(pid)
        if s is None:
            break
        counts[s] += 1
        time.sleep(interval)
    total = sum(counts.values())
    print(f"main thread of pid {pid}: {total} samples over {seconds:.0f} s")
    for state, n in counts.most_common():
        print(f"  {100.0 * n / max(total, 1):5.1f}%  {state:16s} {MEANING.get(state, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
