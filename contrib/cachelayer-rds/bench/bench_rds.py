"""A cached RDS read against querying PostgreSQL directly, measured in one run.

Starts PostgreSQL (Debian's, loopback, temp data dir), moto (for the password secret) and a real
``cachelayer serve`` with the rds: section, then times, alternating rounds:

- hit: ``GET /rds?name=flags/dark-mode`` on a kept HTTP connection (what a function pays);
- direct, fresh connection: connect + query + close with the same driver (what a function
  pays per cold start without the extension, or per call if it does not keep a connection);
- direct, kept connection: the query alone on an open connection (a function's best case).

Prints medians and the ratios direct/hit. Optional ``--psycopg`` adds psycopg's fresh connection
and kept-connection query when it is importable (PYTHONPATH), to compare the drivers.

    .venv/bin/python contrib/cachelayer-rds/bench/bench_rds.py [--rounds 3] [--n 200]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from rds_databases import (  # noqa: E402 - the tests' helpers, on the path only now
    APP_PASSWORD,
    SECRET_NAME,
    PostgresServer,
    TestCA,
    free_port,
    temp_directory,
)

QUERY = "SELECT key, value, enabled FROM flags WHERE key = :key"
TOKEN = "bench-session-token"


def timed(fn: Callable[[], object], n: int) -> List[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=200, help="requests per round for hits")
    parser.add_argument("--fresh-n", type=int, default=40, help="fresh connections per round")
    parser.add_argument("--psycopg", action="store_true")
    args = parser.parse_args()

    import boto3
    import pg8000.native

    from cachelayer.testing.moto import aws_environment, moto_server

    bindir = PostgresServer.find_bindir()
    if bindir is None:
        print("PostgreSQL is not installed: bash scripts/ci/install-databases.sh")
        return 2
    directory = temp_directory("cachelayer-rds-bench-")
    os.mkdir(os.path.join(directory, "tls"))
    pg = PostgresServer(bindir, directory, TestCA(os.path.join(directory, "tls")))
    pg.init()
    pg.start()
    child = None
    try:
        pg.sql(f"CREATE USER app PASSWORD '{APP_PASSWORD}'")
        pg.sql("CREATE DATABASE appdb OWNER app")
        pg.sql(
            "CREATE TABLE flags (key text PRIMARY KEY, value text, enabled boolean)",
            database="appdb",
        )
        pg.sql("INSERT INTO flags VALUES ('dark-mode', 'on', true)", database="appdb")
        pg.sql("GRANT SELECT ON flags TO app", database="appdb")
        with moto_server() as endpoint:
            env = dict(os.environ, **aws_environment(endpoint))
            os.environ.update(aws_environment(endpoint))
            boto3.client("secretsmanager").create_secret(
                Name=SECRET_NAME, SecretString=APP_PASSWORD
            )
            config = os.path.join(directory, "config.yaml")
            with open(config, "w") as f:
                f.write(
                    "rds:\n  - name: flags\n"
                    f"    url: postgresql://app@127.0.0.1:{pg.port}/appdb\n"
                    f"    password_secret: {SECRET_NAME}\n"
                    f'    query: "{QUERY}"\n    ttl: 1h\n'
                )
            port = free_port()
            env.update(
                AWS_SESSION_TOKEN=TOKEN,
                CACHE_EXTENSION_CONFIG=config,
                CACHE_EXTENSION_PORT=str(port),
                CACHE_EXTENSION_LOG_LEVEL="WARNING",
            )
            child = subprocess.Popen([sys.executable, "-m", "cachelayer", "serve"], env=env)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            deadline = time.monotonic() + 20
            while True:
                try:
                    conn.request(
                        "GET", "/-/health", headers={"X-Aws-Parameters-Secrets-Token": TOKEN}
                    )
                    conn.getresponse().read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    time.sleep(0.1)

            def hit() -> None:
                conn.request(
                    "GET",
                    "/rds?name=flags/dark-mode",
                    headers={"X-Aws-Parameters-Secrets-Token": TOKEN},
                )
                response = conn.getresponse()
                body = response.read()
                assert response.status == 200, body

            hit()  # the miss that fills the cache

            def connect() -> pg8000.native.Connection:
                return pg8000.native.Connection(
                    "app",
                    host="127.0.0.1",
                    port=pg.port,
                    database="appdb",
                    password=APP_PASSWORD,
                    ssl_context=False,
                )

            sql = "SELECT key, value, enabled FROM flags WHERE key = :key"

            def fresh() -> None:
                c = connect()
                c.run(sql, key="dark-mode")
                c.close()

            kept_conn = connect()

            def kept() -> None:
                kept_conn.run(sql, key="dark-mode")

            cases: Dict[str, Callable[[], None]] = {"hit": hit, "fresh": fresh, "kept": kept}
            counts = {"hit": args.n, "fresh": args.fresh_n, "kept": args.n}
            if args.psycopg:
                import psycopg

                dsn = f"host=127.0.0.1 port={pg.port} dbname=appdb user=app password={APP_PASSWORD} sslmode=disable"
                psql = "SELECT key, value, enabled FROM flags WHERE key = %s"

                def psycopg_fresh() -> None:
                    with psycopg.connect(dsn) as c:
                        c.execute(psql, ("dark-mode",)).fetchall()

                pconn = psycopg.connect(dsn, autocommit=True)

                def psycopg_kept() -> None:
                    pconn.execute(psql, ("dark-mode",)).fetchall()

                cases.update(psycopg_fresh=psycopg_fresh, psycopg_kept=psycopg_kept)
                counts.update(psycopg_fresh=args.fresh_n, psycopg_kept=args.n)
            samples: Dict[str, List[float]] = {k: [] for k in cases}
            for _ in range(args.rounds):
                for name, fn in cases.items():
                    samples[name].extend(timed(fn, counts[name]))
            med = {k: statistics.median(v) for k, v in samples.items()}
            print(
                f"PostgreSQL {os.path.basename(os.path.dirname(bindir))} on loopback, {args.rounds} rounds"
            )
            for name, value in med.items():
                print(f"  {name:16s} median {value * 1e6:9.1f} µs  ({len(samples[name])} samples)")
            print(f"  ratio fresh-connection query / hit: {med['fresh'] / med['hit']:.1f}x")
            print(f"  ratio kept-connection query / hit:  {med['kept'] / med['hit']:.2f}x")
            if args.psycopg:
                print(
                    f"  ratio psycopg fresh / pg8000 fresh: {med['psycopg_fresh'] / med['fresh']:.2f}x"
                )
                print(
                    f"  ratio psycopg kept / pg8000 kept:   {med['psycopg_kept'] / med['kept']:.2f}x"
                )
    finally:
        if child is not None:
            child.terminate()
            child.wait(10)
        pg.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    tempfile.tempdir = None
    sys.exit(main())
