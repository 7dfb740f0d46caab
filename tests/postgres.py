"""A throwaway PostgreSQL server on loopback for the tests: initdb into a temporary folder, pg_ctl
start on a free port, trust authentication, pg_ctl stop and delete everything at the end.

Debian's `postgresql` package is enough (its binaries live in /usr/lib/postgresql/N/bin, off PATH);
no running cluster, no password and no network beyond 127.0.0.1 are needed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """Why a PostgreSQL server cannot be started here (shown as the skip or failure reason)."""


def find_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()])
    on_path = shutil.which("initdb")
    if on_path:  # an explicit PATH entry (another distribution, a CI image) beats Debian's layout
        candidates.append(on_path)
    for initdb in reversed(candidates):
        bindir = Path(initdb).parent
        if os.access(initdb, os.X_OK) and os.access(bindir / "pg_ctl", os.X_OK):
            return bindir
    raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin "
                              "or on PATH; install Debian's `postgresql` package (.ci/run does)")


def _as_server_user() -> tuple[list[str], pwd.struct_passwd | None]:
    """initdb and postgres refuse to run as root: as root, they run as the `postgres` system user."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root and there is no `postgres` system user to run the server "
                                  "as (Debian's postgresql package creates it)") from None
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"], user
    su = shutil.which("su")
    if su:
        return [su, "-s", "/bin/sh", "-c", 'exec "$0" "$@"', "postgres", "--"], user
    raise PostgresUnavailable("running as root with neither runuser nor su to switch to the postgres user")


class PostgresServer:
    def __init__(self, bindir: Path, root: Path, port: int, prefix: list[str]) -> None:
        self.bindir, self.root, self.port, self.prefix = bindir, root, port, prefix
        self.data, self.sockets, self.log = root / "data", root / "sockets", root / "server.log"
        self._databases = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        self._databases += 1
        name = f"{prefix}_{self._databases}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [*self.prefix, str(self.bindir / args[0]), *args[1:]]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout}"
                                      f"\n{self.log_text()[-2000:]}")

    def initdb(self) -> None:
        # No fsync and no sync after initdb: the data is thrown away, and both cost seconds on a busy disk.
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "--no-sync")

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.sockets} -F -c max_connections=200"
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")
        except (PostgresUnavailable, subprocess.TimeoutExpired):
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30")


@contextmanager
def throwaway_postgres(port_for: Callable[[], int]) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL server, running until the block ends. `port_for()` picks a free port; a port
    taken between picking and binding is retried with another."""
    try:
        import psycopg  # noqa: F401  (the driver the store's postgresql+psycopg URLs need)
    except ImportError:
        raise PostgresUnavailable("the psycopg driver is not installed (pip install -e '.[postgres]'; "
                                  "the dev extra includes it)") from None
    bindir = find_bindir()
    prefix, user = _as_server_user()
    # Under /tmp, not pytest's basetemp: that is private to this user, and the server may run as
    # another one that must reach its data folder.
    root = Path(tempfile.mkdtemp(prefix="dvolver-pg-"))
    server = None
    try:
        (root / "sockets").mkdir()
        if user is not None:
            for path in (root, root / "sockets"):
                os.chown(path, user.pw_uid, user.pw_gid)
        for attempt in range(3):
            server = PostgresServer(bindir, root, port_for(), prefix)
            if attempt == 0:
                server.initdb()
            try:
                server.start()
                break
            except PostgresUnavailable:
                if attempt == 2 or "already in use" not in server.log_text():
                    raise
        yield server
    finally:
        if server is not None and (server.data / "postmaster.pid").exists():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
