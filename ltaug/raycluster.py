"""Ray for ltaug's commands: join a cluster that answers, or start a local one that ends with the command.

    started = connect(address, num_cpus=..., flag="--address")   # ray.init, checked; False when Ray was already up
    ...
    if started: disconnect()

`--address HOST:PORT` (or `ray://HOST:PORT`, or `auto`) is checked with a plain TCP connection first, so a port where
nothing listens fails within seconds naming the address, instead of Ray's minute of retries. Without an address a
*new* local Ray is started (`address="local"`: never an unrelated cluster found through /tmp/ray), and a small
watchdog process (`ltaug/_raywatch.py`) holds a pipe from this process: when this process ends in any way (kill -9
included), the watchdog ends every process of that local Ray (raylet, GCS, workers, agents), so none outlives the
command.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

import ray

from ltaug.errors import LtaugError

CONNECT_TIMEOUT_S = 3.0
_WATCH = Path(__file__).with_name("_raywatch.py")
_watchdog: Optional[subprocess.Popen] = None


def _children(pid: int) -> set[int]:
    """Direct children of `pid` (from /proc; empty where there is no /proc)."""
    out = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for d in names:
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.add(int(d))
    return out


def resolve_address(address: str, flag: str = "--address") -> tuple[str, int]:
    """(host, port) of a Ray address: HOST:PORT, ray://HOST:PORT, or auto (RAY_ADDRESS, else the cluster `ray start`
    recorded on this machine)."""
    addr = address.strip()
    if addr == "auto":
        from_env = os.environ.get("RAY_ADDRESS", "")
        recorded = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
        if from_env and from_env != "auto":
            addr = from_env
        elif recorded.is_file():
            addr = recorded.read_text().strip()
        else:
            raise LtaugError(f"{flag} auto: no running Ray cluster was found on this machine (no RAY_ADDRESS, nothing "
                             f"recorded by `ray start`); give {flag} HOST:PORT, or drop {flag} to start a local Ray")
    target = addr.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise LtaugError(f"{flag} {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    return host.strip("[]"), int(port)


def check_address(address: Optional[str], flag: str = "--address", timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse (LtaugError, within `timeout` seconds) a cluster address where nothing accepts a connection."""
    if not address:
        return
    host, port = resolve_address(address, flag)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        why = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e)).lower()
        raise LtaugError(f"{flag} {address}: no Ray cluster answers at {host}:{port} ({why}); start one there "
                         f"(`ray start --head --port {port}`), or drop {flag} to use a local Ray") from None


def connect(address: Optional[str] = None, *, num_cpus: Optional[int] = None, flag: str = "--address") -> bool:
    """Join the cluster at `address`, or start a new local Ray (with the watchdog). False when Ray was already
    initialized in this process (then the caller neither started nor owns it)."""
    global _watchdog
    if ray.is_initialized():
        return False
    if address:
        check_address(address, flag)
        if address.strip() == "auto":  # join exactly the cluster that was checked
            address = "{}:{}".format(*resolve_address(address, flag))
        try:
            ray.init(address=address, log_to_driver=False, include_dashboard=False)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
            raise LtaugError(f"{flag} {address}: could not join the Ray cluster there ({str(e).splitlines()[0]})") \
                from None
        return True
    before = _children(os.getpid())
    ray.init(address="local", num_cpus=num_cpus, log_to_driver=False, include_dashboard=False)
    roots = sorted(_children(os.getpid()) - before)
    if roots and _WATCH.is_file():
        _watchdog = subprocess.Popen([sys.executable, "-S", str(_WATCH), *map(str, roots)], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                     close_fds=True)
    return True


def disconnect() -> None:
    """ray.shutdown(); then the watchdog ends whatever of the local Ray is still running."""
    global _watchdog
    ray.shutdown()
    if _watchdog is not None:
        try:
            _watchdog.stdin.close()
            _watchdog.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _watchdog = None
