"""The watchdog of a local Ray started by an ltaug command (ltaug.raycluster); run as a script, not imported.

    python -S _raywatch.py PID [PID ...]      (stdin: a pipe from the command)

It follows the given processes (the local Ray's raylet, GCS, monitors) and every process they start, by /proc,
every half second. When its stdin reaches end of file (the command closed it, or died in any way, kill -9
included), it sends SIGTERM and then SIGKILL to each of those processes that is still the same process (same
start time), so no worker or agent of that Ray outlives the command. It never touches another process.
"""

import os
import select
import signal
import sys
import time


def _stat(pid):
    """(ppid, start time, state) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rfind(")") + 2:].split()
    return int(fields[1]), int(fields[19]), fields[0]


def _alive(pid, start):
    st = _stat(pid)
    return st is not None and st[1] == start and st[2] != "Z"


def _follow(known):
    """Add every descendant of the known processes to `known` (pid -> start time)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st is not None:
                children.setdefault(st[0], []).append((int(d), st[1]))
    stack = list(known)
    while stack:
        for child, start in children.get(stack.pop(), []):
            if child not in known:
                known[child] = start
                stack.append(child)


def main():
    known = {}
    for arg in sys.argv[1:]:
        st = _stat(int(arg))
        if st is not None:
            known[int(arg)] = st[1]
    while True:
        try:
            _follow(known)
        except OSError:
            pass
        ready, _, _ = select.select([sys.stdin], [], [], 0.5)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        _follow(known)
        alive = [p for p, start in known.items() if _alive(p, start)]
        if not alive:
            return
        for p in alive:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(_alive(p, known[p]) for p in alive):
            time.sleep(0.05)


if __name__ == "__main__":
    main()
