"""A service on a loopback port, for the benchmarks and the tests alike.

A benchmark run as `python bench/x.py` has bench/ on sys.path and imports this as `live`; the tests,
run from the repository root, import it as `bench.live`.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx


def free_port() -> int:
    """A loopback port that was free a moment ago (for a process that binds it itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, process: subprocess.Popen | None = None, timeout: float = 60,
            log: Callable[[], str] | None = None) -> None:
    """Waits until GET `url` answers 200; raises RuntimeError when `timeout` passes first or `process`
    (the server, where it runs in its own process) exits, with `log()` in the message when given."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"nothing came up at {url}" + (f":\n{log()}" if log else ""))
        time.sleep(0.2)


@contextmanager
def serving(app, graceful_s: float = 2) -> Iterator[str]:
    """An ASGI app served by uvicorn in a thread of this process on a loopback port; yields its base URL.

    The socket is bound here and handed to uvicorn, so no other process can take the port between.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=graceful_s))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
