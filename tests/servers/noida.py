"""noida-db, an Elasticsearch API emulator (not Elasticsearch), on a free 127.0.0.1 port.

Started through the `noida-db` console script of the running virtualenv. `restart()` keeps the data
directory, so tests can check that nothing is lost across a server restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def noida_binary() -> str | None:
    beside = Path(sys.executable).with_name("noida-db")
    return str(beside) if beside.exists() else shutil.which("noida-db")


class NoidaServer:
    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 15.0) -> NoidaServer:
        exe = noida_binary()
        if exe is None:
            raise RuntimeError("noida-db is not installed (pip install -e '.[servers]')")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data_dir.parent / f"noida-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [exe, "start", "--data-dir", str(self.data_dir), "--host", "127.0.0.1", "--only", "elasticsearch",
             "--elasticsearch-port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"noida-db exited with {self.proc.returncode} (log: {self._log.name})")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=0.5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"noida-db did not answer on {self.url} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (noida saves its data), then SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> NoidaServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
