"""Real PostgreSQL and MariaDB servers for the tests: Debian's binaries, loopback, temp data dirs."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

import attrs

from cachelayer.testing.tls import TestCA, make_test_ca

APP_PASSWORD = "app-pass-42"
SECRET_NAME = "app-db-password"
INSTALL_HINT = "install them with: bash scripts/ci/install-databases.sh (needs root)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user(user: Optional[str], argv: Sequence[str]) -> List[str]:
    return ["runuser", "-u", user, "--", *argv] if user else list(argv)


@attrs.define
class PostgresServer:
    """A PostgreSQL cluster on 127.0.0.1, run as an unprivileged user when the tests are root.

    Superuser ``postgres`` / ``SUPERUSER_PASSWORD``; TLS on (plain connections allowed too);
    pg_stat_statements loaded so tests count the queries the server really ran.
    """

    bindir: str
    directory: str
    tls_dir: str
    port: int = 0
    user: Optional[str] = None
    tls: TestCA = attrs.field(init=False)  # made by init()
    SUPERUSER_PASSWORD = "super-secret-pw"

    @classmethod
    def find_bindir(cls) -> Optional[str]:
        found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
        found.sort(key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
        return os.path.dirname(found[-1]) if found else None

    @property
    def datadir(self) -> str:
        return os.path.join(self.directory, "data")

    def init(self) -> None:
        if os.geteuid() == 0:
            self.user = "nobody"  # PostgreSQL refuses to run as root
            entry = pwd.getpwnam(self.user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        pwfile = os.path.join(self.directory, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.SUPERUSER_PASSWORD)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self.tls = make_test_ca(Path(self.tls_dir), other_ca=True, key_owner=self.user)
        subprocess.run(
            _as_user(
                self.user,
                [
                    os.path.join(self.bindir, "initdb"),
                    "-D",
                    self.datadir,
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
            ),
            check=True,
            capture_output=True,
        )
        self.port = free_port()

    def start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                "-c unix_socket_directories=''",
                "-c shared_preload_libraries=pg_stat_statements",
                "-c pg_stat_statements.track=all",
                "-c fsync=off",
                "-c max_connections=20",
                "-c ssl=on",
                f"-c ssl_cert_file={self.tls.cert_file}",
                f"-c ssl_key_file={self.tls.key_file}",
            ]
        )
        log = os.path.join(self.directory, "log")
        self._pg_ctl("-l", log, "-o", options, "-w", "-t", "30", "start", check=True)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop", check=False)

    def _pg_ctl(self, *args: str, check: bool) -> None:
        """``pg_ctl -D <datadir> <args>`` as the server's owner."""
        pg_ctl = os.path.join(self.bindir, "pg_ctl")
        subprocess.run(
            _as_user(self.user, [pg_ctl, "-D", self.datadir, *args]),
            check=check,
            capture_output=True,
        )

    def sql(self, statement: str, database: str = "postgres", **params: Any) -> List[Any]:
        """Run one statement as the superuser; the rows."""
        import pg8000.native

        conn = pg8000.native.Connection(
            "postgres",
            host="127.0.0.1",
            port=self.port,
            database=database,
            password=self.SUPERUSER_PASSWORD,
            ssl_context=False,
        )
        try:
            return list(conn.run(statement, **params) or [])
        finally:
            conn.close()


@attrs.define
class MariadbServer:
    """A MariaDB server on 127.0.0.1 with its general log in a table (to count queries)."""

    directory: str
    tls_dir: str
    port: int = 0
    process: Any = None
    tls: TestCA = attrs.field(init=False)  # made by init()

    @staticmethod
    def find_server() -> Optional[str]:
        return shutil.which("mariadbd") or next(
            (p for p in ("/usr/sbin/mariadbd", "/usr/sbin/mysqld") if os.path.exists(p)), None
        )

    @property
    def socket_path(self) -> str:
        return os.path.join(self.directory, "mysqld.sock")

    def init(self) -> None:
        installer = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
        subprocess.run(
            [
                installer,
                "--no-defaults",
                f"--datadir={os.path.join(self.directory, 'data')}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ],
            check=True,
            capture_output=True,
        )
        self.tls = make_test_ca(Path(self.tls_dir), other_ca=True)
        self.port = free_port()

    def start(self) -> None:
        server = self.find_server()
        assert server is not None
        self.process = subprocess.Popen(
            [
                server,
                "--no-defaults",
                f"--datadir={os.path.join(self.directory, 'data')}",
                f"--socket={self.socket_path}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={os.path.join(self.directory, 'mysqld.pid')}",
                "--user=root",
                "--general-log=1",
                "--log-output=TABLE",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                "--max-connections=20",
                f"--ssl-ca={self.tls.ca_file}",
                f"--ssl-cert={self.tls.cert_file}",
                f"--ssl-key={self.tls.key_file}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.directory, "log"), "ab"),  # noqa: SIM115 (the server's log, open while it runs)
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.sql("SELECT 1")
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    with open(os.path.join(self.directory, "log"), errors="replace") as f:
                        raise RuntimeError("MariaDB did not start:\n" + f.read()[-3000:]) from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def sql(self, statement: str, args: Any = None, database: Optional[str] = None) -> List[Any]:
        """Run one statement as root over the socket; the rows."""
        import pymysql

        conn = pymysql.connect(
            unix_socket=self.socket_path, user="root", database=database, autocommit=True
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement, args)
                return list(cursor.fetchall())
        finally:
            conn.close()


def temp_directory(prefix: str) -> str:
    """A directory outside pytest's root-only tmp tree, so an unprivileged server can use it."""
    return tempfile.mkdtemp(prefix=prefix)
