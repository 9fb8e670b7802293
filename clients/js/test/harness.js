// What every test of the client needs: a fresh database, a real `boardcast serve` on a free port (stopped,
// killed and started again on the same port at will), users, tokens and projects made with the boardcast CLI,
// SQL written the way psql would (it is psql), a TCP proxy to cut, and a throwaway PostgreSQL cluster to restart.
//
// BOARDCAST_TEST_DATABASE_URL (or DATABASE_URL) names a server the tests may create databases on (`make test`
// sets it); BOARDCAST_BIN the binary (`make test-js` sets it; default: the debug build in ../../target).

import { execFile, spawn, execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import WebSocket from "ws";

import { connect } from "../client.js";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, "../../..");

/** How long a test waits for something that should happen. */
export const WAIT = 30000;

export const bin = process.env.BOARDCAST_BIN ?? path.join(root, "target/debug/boardcast");

export function adminUrl() {
  const url = process.env.BOARDCAST_TEST_DATABASE_URL ?? process.env.DATABASE_URL;
  if (!url) throw new Error("set BOARDCAST_TEST_DATABASE_URL (make test does) to a PostgreSQL server tests may create databases on");
  return url;
}

export function withDb(url, db) {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

/** Runs SQL with psql; returns its unaligned output. */
export async function psql(url, sql) {
  const { stdout } = await run("psql", ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql], {
    maxBuffer: 64 << 20,
  });
  return stdout.trim();
}

/** A fresh, empty database on the server at `serverUrl` (named bc_test_* so `make test` drops leftovers). */
export async function freshDatabase(serverUrl = adminUrl()) {
  const name = `bc_test_js_${randomUUID().replaceAll("-", "")}`;
  await psql(withDb(serverUrl, "postgres"), `CREATE DATABASE ${name}`);
  return withDb(serverUrl, name);
}

export async function dropDatabase(url) {
  const name = new URL(url).pathname.slice(1);
  await psql(withDb(url, "postgres"), `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
}

/** Runs the boardcast CLI against `db`; returns its stdout. */
export async function cli(db, ...args) {
  const { stdout } = await run(bin, args, { env: { ...process.env, DATABASE_URL: db } });
  return stdout.trim();
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns something truthy; fails with `what` after `timeout`. */
export async function until(check, what, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A `boardcast serve` process on a fixed port; stop it, kill it, start it again on the same port. */
export class Server {
  constructor(db, env = {}) {
    this.db = db;
    this.env = env;
    this.port = 0;
    this.proc = null;
    this.log = [];
  }

  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  get ws() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    const proc = spawn(bin, ["serve"], {
      env: {
        ...process.env,
        DATABASE_URL: this.db,
        BOARDCAST_ADDR: `127.0.0.1:${this.port}`,
        RUST_LOG: process.env.RUST_LOG ?? "boardcast=warn,warn",
        ...this.env,
      },
      stdio: ["ignore", "ignore", "pipe"],
    });
    proc.stderr.on("data", (d) => {
      this.log.push(String(d));
      if (this.log.length > 200) this.log.shift();
    });
    this.proc = proc;
    this.exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
    await until(async () => {
      if (proc.exitCode !== null) throw new Error(`boardcast serve exited ${proc.exitCode}:\n${this.log.join("")}`);
      try {
        return (await fetch(`${this.http}/healthz`)).status === 200;
      } catch {
        return false;
      }
    }, "the server to become healthy");
  }

  /** SIGTERM: the graceful shutdown (close 1012 to every client). */
  async stop() {
    if (!this.proc) return;
    this.proc.kill("SIGTERM");
    await this.exited;
    this.proc = null;
  }

  /** SIGKILL: the process dies, sockets are cut without a close frame. */
  async kill() {
    if (!this.proc) return;
    this.proc.kill("SIGKILL");
    await this.exited;
    this.proc = null;
  }
}

/** A database with a user (alice, her token) and a project she owns, and a server on it. */
export async function setup({ env = {}, serverUrl } = {}) {
  const db = await freshDatabase(serverUrl);
  const token = await cli(db, "user", "add", "alice");
  const project = await cli(db, "project", "add", "Board", "alice");
  const server = new Server(db, env);
  await server.start();
  return {
    db,
    server,
    token,
    project,
    sql: (text) => psql(db, text),
    async done() {
      await server.stop();
      await dropDatabase(db);
    },
  };
}

/** A client on Node, with the `ws` package's WebSocket. */
export function client(url, options) {
  return connect(url, { WebSocket, ...options });
}

/** Inserts `n` tasks with plain SQL, each in its own transaction (one psql run). */
export async function insertTasks(db, project, n, prefix = "t") {
  const statements = [];
  for (let i = 0; i < n; i++) {
    statements.push(`INSERT INTO tasks (project_id, title) VALUES ('${project}', '${prefix}${i}');`);
  }
  const file = path.join(os.tmpdir(), `bc-js-${randomUUID()}.sql`);
  fs.writeFileSync(file, statements.join("\n"));
  try {
    await run("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", db, "-f", file]);
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/** The frames recorded for a project with seq > `after`: what a client must have received, in order. */
export async function recorded(db, project, after = 0) {
  const out = await psql(db, `SELECT frame FROM feed_events WHERE room = '${project}' AND seq > ${after} ORDER BY seq`);
  return out === "" ? [] : out.split("\n").map((l) => JSON.parse(l));
}

export async function latestSeq(db, project) {
  return Number(await psql(db, `SELECT coalesce(max(seq), 0) FROM feed_events WHERE room = '${project}'`));
}

/** Everything a room delivers, and its status changes. */
export function record(room) {
  const r = { events: [], statuses: [], resyncs: [], joins: [] };
  room.on("event", (e) => r.events.push(e));
  room.on("status", (s) => r.statuses.push(s));
  room.on("resync", (i) => r.resyncs.push(i));
  room.on("joined", (i) => r.joins.push(i));
  return r;
}

/** A TCP proxy in front of `port`: `sever()` cuts every connection (the peer sees it closed), `blackhole()`
 *  keeps them open but forwards nothing (a silent network cut), `heal()` lets new connections through again. */
export class TcpProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.conns = new Set();
    this.holes = false;
  }

  async start() {
    await this.up();
    return this;
  }

  /** Accepts connections (again, on the same port). */
  async up() {
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.targetPort, "127.0.0.1");
      const pair = { client, upstream };
      this.conns.add(pair);
      const forward = (from, to) =>
        from.on("data", (d) => {
          if (!this.holes) to.write(d);
        });
      forward(client, upstream);
      forward(upstream, client);
      const end = () => {
        this.conns.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on("close", end).on("error", end);
      upstream.on("close", end).on("error", end);
    });
    await new Promise((r) => this.server.listen(this.port ?? 0, "127.0.0.1", r));
    this.port = this.server.address().port;
  }

  /** The network is gone: every connection cut, new ones refused. */
  async down() {
    const closed = new Promise((r) => this.server.close(r));
    this.sever();
    await closed;
  }

  get ws() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  sever() {
    for (const { client, upstream } of this.conns) {
      client.resetAndDestroy();
      upstream.destroy();
    }
    this.conns.clear();
  }

  blackhole() {
    this.holes = true;
    // Nothing flows on the connections open now; new ones are accepted and go nowhere as well.
  }

  heal() {
    this.holes = false;
    // A connection that lost bytes is broken for good: cut the ones that were in the hole.
    this.sever();
  }

  async close() {
    if (this.server.listening) await this.down();
  }
}

/** A PostgreSQL cluster of the test's own (initdb, pg_ctl) on a free port: never the shared server. As root,
 *  initdb and pg_ctl run as the `postgres` account. */
export class Cluster {
  static async start() {
    const pgBin = execFileSync(path.join(root, "scripts/pg.sh"), ["bindir"]).toString().trim();
    const base = path.join(os.tmpdir(), "boardcast-test-clusters");
    fs.mkdirSync(base, { recursive: true });
    const dir = path.join(base, `js-${randomUUID()}`);
    fs.mkdirSync(dir);
    const asRoot = process.getuid?.() === 0;
    if (asRoot) {
      fs.chmodSync(base, 0o755);
      execFileSync("chown", ["postgres", dir]);
    }
    const c = new Cluster();
    c.dir = dir;
    c.bin = pgBin;
    c.asRoot = asRoot;
    c.pg("initdb", ["-D", dir, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
    c.port = await freePort();
    fs.appendFileSync(
      path.join(dir, "postgresql.conf"),
      `listen_addresses = '127.0.0.1'\nport = ${c.port}\nunix_socket_directories = '${dir}'\nfsync = off\n` +
        "full_page_writes = off\nmax_connections = 100\nshared_buffers = 64MB\n",
    );
    c.startAgain();
    return c;
  }

  pg(tool, args) {
    const exe = path.join(this.bin, tool);
    const [cmd, argv] = this.asRoot ? ["runuser", ["-u", "postgres", "--", exe, ...args]] : [exe, args];
    return execFileSync(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] }).toString();
  }

  get url() {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  /** Stops the server the hard way, as a crash would. */
  stop() {
    this.pg("pg_ctl", ["-D", this.dir, "-m", "immediate", "-w", "stop"]);
  }

  startAgain() {
    this.pg("pg_ctl", ["-D", this.dir, "-l", path.join(this.dir, "server.log"), "-w", "-t", "60", "start"]);
  }

  destroy() {
    try {
      this.pg("pg_ctl", ["-D", this.dir, "-m", "immediate", "stop"]);
    } catch {
      // not running
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
