#!/usr/bin/env python3
"""Regenerates the fuzz seed corpus in fuzz/seeds/ from real client traffic.

Starts a throwaway PostgreSQL cluster (initdb in a temp dir, run as the
`postgres` user when root), puts a recording TCP forwarder in front of it on
loopback, and runs psql, pgbench, psycopg and asyncpg through the forwarder.
Each connection's client->server bytes become a `frontend_framer` seed, its
server->client bytes a `backend_framer` seed, and the SQL texts of its Query
and Parse messages `rewrite` seeds. Generated deep expressions (the inputs
that must never exhaust a stack) and config files are added.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install 'psycopg[binary]' asyncpg
    /tmp/venv/bin/python fuzz/capture_seeds.py

The clients work on the tables the rewrite target's rules map (users,
orders), so the captured statements exercise the rewriter.
"""

import asyncio
import glob
import hashlib
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading

HERE = pathlib.Path(__file__).resolve().parent
SEEDS = HERE / "seeds"
# Each recorded direction is cut to this many bytes, so the corpus stays small.
MAX_STREAM = 12_000
SCRAM_PASSWORD = "fuzz-secret"

SCHEMA = """
CREATE TABLE users (id serial PRIMARY KEY, name text, full_name text, email text);
CREATE TABLE orders (id serial PRIMARY KEY, user_id int, status text, status_code int);
CREATE SCHEMA app;
CREATE TABLE app.people (id serial PRIMARY KEY, name text, first_name text, last_name text);
INSERT INTO users (name, email) SELECT 'user ' || i, 'u' || i || '@example.com' FROM generate_series(1, 20) i;
INSERT INTO orders (user_id, status) SELECT i, 'pending' FROM generate_series(1, 20) i;
CREATE ROLE scram_user LOGIN PASSWORD 'fuzz-secret';
GRANT ALL ON ALL TABLES IN SCHEMA public, app TO scram_user;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public, app TO scram_user;
GRANT USAGE ON SCHEMA app TO scram_user;
"""


def find_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    for d in reversed(dirs):
        if os.path.exists(os.path.join(d, "postgres")):
            return d
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
    if out.returncode == 0:
        return out.stdout.strip()
    sys.exit("capture_seeds: PostgreSQL server binaries not found (apt-get install postgresql)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throwaway cluster in a temp dir; SCRAM for scram_user, trust otherwise."""

    def __init__(self):
        self.bindir = find_bindir()
        self.dir = tempfile.mkdtemp(prefix="pgshim-seeds-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")

    def run(self, *args):
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    def start(self):
        self.run(f"{self.bindir}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                 "--no-sync", "-E", "UTF8", "--locale=C")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all scram_user 127.0.0.1/32 scram-sha-256\n"
                    "host all all 127.0.0.1/32 trust\n")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run(f"{self.bindir}/pg_ctl", "-D", self.data, "-o", opts, "-w", "-l",
                 os.path.join(self.dir, "log"), "start")
        self.psql_direct("-c", SCHEMA)
        # pgbench's tables are made directly: its COPY would swamp the corpus.
        self.tool("pgbench", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                  "-i", "-s", "1", "-q", "postgres")

    def psql_direct(self, *args):
        self.tool("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                  "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", *args)

    def tool(self, name, *args, env=None, check=True):
        path = os.path.join(self.bindir, name)
        if not os.path.exists(path):
            path = shutil.which(name) or sys.exit(f"capture_seeds: {name} not found")
        subprocess.run([path, *args], check=check, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=env)

    def stop(self):
        self.run(f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class Recorder:
    """A TCP forwarder on loopback that keeps both directions of every connection."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.label = "none"
        self.sessions = []  # (label, client bytes, server bytes)
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            record = (self.label, bytearray(), bytearray())
            with self.lock:
                self.sessions.append(record)
            threading.Thread(target=self.pump, args=(client, server, record[1]), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, record[2]), daemon=True).start()

    @staticmethod
    def pump(src, dst, log):
        try:
            while chunk := src.recv(65536):
                log.extend(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def run_psql(cluster, rec):
    base = ["-h", "127.0.0.1", "-p", str(rec.port), "-U", "postgres", "-d", "postgres", "-X"]
    cluster.tool("psql", *base, "-c", "SELECT id, name FROM users WHERE id < 3; SELECT 1/0",
                 check=False)
    cluster.tool("psql", *base, "-c", "\\d users")
    script = (
        "BEGIN;\n"
        "UPDATE users SET name = 'renamed' WHERE id = 2;\n"
        "SELECT u.name, o.status FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = 2;\n"
        "ROLLBACK;\n"
        "PREPARE q(int) AS SELECT name FROM users WHERE id = $1;\n"
        "EXECUTE q(1);\n"
        "DEALLOCATE q;\n"
        "COPY (SELECT id, name FROM users WHERE id < 4) TO STDOUT;\n"
        "\\copy orders (user_id, status) from pstdin\n"
    )
    env = dict(os.environ, PGPASSWORD=SCRAM_PASSWORD)
    path = os.path.join(cluster.dir, "script.sql")
    with open(path, "w") as f:
        f.write(script)
    subprocess.run([cluster.bindir + "/psql", *base[:4], "-U", "scram_user", "-d", "postgres",
                    "-X", "-f", path], input=b"1\tpaid\n2\tpending\n\\.\n", check=True,
                   stdout=subprocess.DEVNULL, env=env)


def run_pgbench(cluster, rec):
    for mode in ("simple", "extended", "prepared"):
        rec.label = f"pgbench-{mode}"
        cluster.tool("pgbench", "-h", "127.0.0.1", "-p", str(rec.port), "-U", "postgres",
                     "-M", mode, "-t", "3", "-c", "1", "-n", "postgres")


def run_psycopg(rec):
    import psycopg

    dsn = f"host=127.0.0.1 port={rec.port} dbname=postgres user=scram_user password={SCRAM_PASSWORD}"
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT id, name, email FROM users WHERE id = %s", (1,))
            cur.fetchall()
            cur.execute("SELECT name FROM users WHERE id = %s", (2,), prepare=True)
            cur.execute("SELECT name FROM users WHERE id = %s", (3,), prepare=True)
            cur.executemany("INSERT INTO users (name, email) VALUES (%s, %s)",
                            [("ada lovelace", "ada@example.com"), ("alan turing", None)])
            cur.execute("UPDATE orders SET status = %s WHERE user_id = %s RETURNING id",
                        ("paid", 1))
            cur.execute("SELECT u.name, count(o.*) FROM users u LEFT JOIN orders o "
                        "ON o.user_id = u.id WHERE u.name LIKE %s GROUP BY u.name", ("user%",))
        conn.rollback()
        with conn.pipeline():
            conn.execute("SELECT name FROM users WHERE id = %s", (4,))
            conn.execute("INSERT INTO orders (user_id, status) VALUES (%s, %s)", (4, "failed"))
        conn.commit()
        try:
            conn.execute("SELECT nme FROM users")
        except psycopg.Error:
            conn.rollback()
        with conn.cursor(name="server_side") as cur:
            cur.execute("SELECT id, name FROM users ORDER BY id")
            cur.fetchmany(5)
        conn.rollback()
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT full_name, name FROM users WHERE id = ANY(%s)", ([1, 2, 3],))


async def run_asyncpg(rec):
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=rec.port, user="scram_user",
                                 password=SCRAM_PASSWORD, database="postgres", ssl=False)
    await conn.fetch("SELECT id, name FROM users WHERE id = $1", 1)
    await conn.fetchval("SELECT count(*) FROM orders WHERE status = $1", "pending")
    stmt = await conn.prepare("SELECT name, email FROM users WHERE id > $1 LIMIT $2")
    await stmt.fetch(1, 3)
    await conn.executemany("INSERT INTO orders (user_id, status) VALUES ($1, $2)",
                           [(1, "paid"), (2, "pending")])
    async with conn.transaction():
        await conn.execute("UPDATE users SET name = $1 WHERE id = $2", "grace hopper", 5)
        async for _ in conn.cursor("SELECT id FROM users WHERE id < $1", 4):
            pass
    try:
        await conn.execute("SELECT 1/0")
    except asyncpg.PostgresError:
        pass
    await conn.execute("SELECT 1; SELECT name FROM users WHERE id = 1")
    await conn.close()


def messages(stream):
    """The regular messages of a client stream, after its startup packets."""
    at = 0
    while at + 8 <= len(stream):
        length, code = struct.unpack(">iI", stream[at:at + 8])
        at += length
        if code >> 16 == 3:
            break
    while at + 5 <= len(stream):
        tag = stream[at:at + 1]
        (length,) = struct.unpack(">i", stream[at + 1:at + 5])
        yield tag, stream[at + 5:at + 1 + length]
        at += 1 + length


def statements(stream):
    for tag, body in messages(stream):
        if tag == b"Q":
            yield body.rstrip(b"\0")
        elif tag == b"P":
            parts = body.split(b"\0")
            if len(parts) > 2:
                yield parts[1]


def deep_expressions():
    """Inputs that recurse deeply in a parser, and what must never overflow a stack."""
    n = 40_000
    yield "deep-plus", "SELECT " + "+".join(["1"] * n) + " FROM users"
    yield "deep-and", "SELECT id FROM users WHERE " + " AND ".join(["true"] * (n // 3))
    yield "deep-concat", "SELECT name || " + " || ".join(["'a'"] * (n // 3)) + " FROM users"
    yield "deep-parens", "SELECT " + "(" * 10_000 + "name" + ")" * 10_000 + " FROM users"
    yield "deep-case", ("SELECT " + "CASE WHEN name = 'x' THEN " * 3_000 + "1"
                        + " END" * 3_000 + " FROM users")
    yield "deep-subquery", ("SELECT * FROM users WHERE id IN "
                            + "(SELECT id FROM users WHERE id IN " * 2_000 + "(1)" + ")" * 2_000)
    yield "long-in-list", ("SELECT name FROM users WHERE id IN ("
                           + ", ".join(str(i) for i in range(n // 3)) + ")")
    yield "deep-comment", "-- users\nSELECT " + "-".join(["1"] * n)


HAND_WRITTEN = [
    "SELECT name FROM users WHERE id = $1",
    "SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE o.status = $1",
    "INSERT INTO users (id, name) VALUES ($1, $2) RETURNING name",
    "INSERT INTO app.people (name) VALUES ($1), ('b c')",
    "UPDATE app.people SET name = $1 WHERE id = $2",
    "UPDATE orders SET status = 'paid' WHERE status = $1 RETURNING status",
    "WITH u AS (SELECT name FROM users) SELECT name FROM u",
    "SELECT (SELECT name FROM users WHERE id = o.user_id) FROM orders o",
    "COPY users (id, name) FROM STDIN",
    "DELETE FROM users WHERE name = $1 RETURNING *",
    "SELECT 1; SELECT name FROM users; /* users */ SELECT $3",
    "INSERT INTO users SELECT * FROM users ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
]

CONFIGS = {
    "empty.toml": "",
    "rules.toml": """listen = "127.0.0.1:6432"
on_unrewritable = "pass"

[upstream]
host = "db.internal"
port = 5433
tls = "verify-full"
ca_file = "/etc/ssl/ca.pem"
user = "pgshim"
password_env = "PGSHIM_PASSWORD"

[admin]
listen = "127.0.0.1:9187"
token_env = "PGSHIM_TOKEN"

[limits]
max_connections = 50
max_message_bytes = 65536

[[rule]]
id = "users-full-name"
database = "app"
table = "users"
old = "name"
new = "full_name"
phase = "expand"

[[rule]]
table = "app.people"
old = "name"
new = ["first_name", "last_name"]
phase = "migrate"
[rule.to_new]
first_name = "split_part(name, ' ', 1)"
last_name = "split_part(name, ' ', 2)"
[rule.to_old]
name = "concat_ws(' ', first_name, last_name)"
""",
    "tls.toml": """[tls]
cert = "/etc/pgshim/server.crt"
key = "/etc/pgshim/server.key"
required = true
""",
}


def control(mask, limit, seed):
    return bytes([mask, limit]) + struct.pack(">H", seed)


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main():
    if SEEDS.exists():
        shutil.rmtree(SEEDS)
    cluster = Cluster()
    cluster.start()
    try:
        rec = Recorder(cluster.port)
        rec.label = "psql"
        run_psql(cluster, rec)
        run_pgbench(cluster, rec)
        rec.label = "psycopg"
        run_psycopg(rec)
        rec.label = "asyncpg"
        asyncio.run(run_asyncpg(rec))
        # Let the pumps see the last closes.
        threading.Event().wait(0.5)
    finally:
        cluster.stop()
    sqls = set()
    counts = {}
    for label, client, server in rec.sessions:
        counts[label] = counts.get(label, 0) + 1
        name = f"{label}-{counts[label]}"
        client, server = bytes(client), bytes(server)
        # Frontend seeds start in the startup phase (bit 7); two masks each.
        write("frontend_framer", name, control(0xFF, 0x87, 1) + client[:MAX_STREAM])
        write("frontend_framer", name + "-parse-only", control(0x01, 0x86, 7) + client[:MAX_STREAM])
        write("backend_framer", name, control(0xFF, 0x80, 3) + server[:MAX_STREAM])
        sqls.update(statements(client))
    for sql in sorted(sqls):
        write("rewrite", "captured-" + hashlib.sha1(sql).hexdigest()[:12], sql)
    for i, sql in enumerate(HAND_WRITTEN):
        write("rewrite", f"rules-{i}", sql.encode())
    for name, sql in deep_expressions():
        write("rewrite", name, sql.encode())
    # An AuthenticationSASL offering channel binding, which pgshim hides.
    mechs = b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
    sasl = b"R" + struct.pack(">ii", 8 + len(mechs), 10) + mechs
    write("backend_framer", "sasl-plus", control(0xFF, 0x80, 5) + sasl)
    for name, text in CONFIGS.items():
        write("config", name, text.encode())
    write("config", "proxy.toml", (HERE.parent / "proxy.toml").read_bytes())
    total = sum(p.stat().st_size for p in SEEDS.rglob("*") if p.is_file())
    print(f"capture_seeds: {len(rec.sessions)} connections, {total} bytes in {SEEDS}")


if __name__ == "__main__":
    main()
