// Faults mid-stream: whatever breaks (the server, the listener's database connection, the socket, PostgreSQL
// itself), every committed event reaches the client once and in order, and the client ends up joined. The
// truth is the database: what feed_events records after the seq the client joined at.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  Cluster,
  TcpProxy,
  cli,
  client,
  dropDatabase,
  insertTasks,
  latestSeq,
  psql,
  record,
  recorded,
  setup,
  sleep,
  until,
} from "./harness.js";

/** Writes one task at a time with psql until stopped; a write that fails (the database is down) is retried. */
function writer(db, project, prefix) {
  let stopped = false;
  let n = 0;
  const done = (async () => {
    while (!stopped) {
      try {
        await psql(db, `INSERT INTO tasks (project_id, title) VALUES ('${project}', '${prefix}${n}')`);
        n++;
      } catch {
        await sleep(50);
      }
    }
  })();
  return {
    get count() {
      return n;
    },
    async stop() {
      stopped = true;
      await done;
    },
  };
}

/** Waits until the room has every event the database recorded and checks they are exactly those, in order. */
async function deliveredExactly(db, project, room, got, from) {
  const latest = await latestSeq(db, project);
  await until(() => room.lastSeq === latest && room.state === "joined", `the room to reach seq ${latest}`);
  const want = await recorded(db, project, from);
  assert.equal(got.events.length, want.length);
  assert.deepEqual(got.events, want);
}

describe("faults", () => {
  let s;
  before(async () => {
    s = await setup();
  });
  after(async () => {
    await s.done();
  });
  test("the server killed and started again on the same port, while writes go on", async () => {
    const c = client(s.server.ws, { token: s.token });
    const statuses = [];
    c.on("status", (x) => statuses.push(x));
    const room = c.join(s.project);
    const got = record(room);
    const { seq } = await room.joined();
    const w = writer(s.db, s.project, "kill-");
    await until(() => got.events.length >= 5, "events before the kill");
    await s.server.kill();
    await until(() => c.state === "disconnected", "the client to notice");
    await until(() => w.count >= 20, "writes while the server is down");
    await s.server.start();
    await until(() => got.joins.length === 2, "the rejoin");
    await until(() => w.count >= 30, "writes after the restart");
    await w.stop();
    await deliveredExactly(s.db, s.project, room, got, seq);
    assert.equal(got.joins[1].resumed, true);
    c.close();
  });
  test("the server shut down gracefully (close 1012) and started again", async () => {
    const c = client(s.server.ws, { token: s.token });
    const codes = [];
    c.on("status", (x) => x.code && codes.push(x.code));
    const room = c.join(s.project);
    const got = record(room);
    const { seq } = await room.joined();
    const w = writer(s.db, s.project, "term-");
    await until(() => got.events.length >= 3, "events before the shutdown");
    await s.server.stop();
    await until(() => w.count >= 15, "writes while the server is down");
    await s.server.start();
    await until(() => got.joins.length === 2, "the rejoin");
    await w.stop();
    await deliveredExactly(s.db, s.project, room, got, seq);
    assert.ok(codes.includes(1012), `close codes: ${codes}`);
    c.close();
  });
  test("the listener's database connection killed, while writes go on", async () => {
    const c = client(s.server.ws, { token: s.token });
    const room = c.join(s.project);
    const got = record(room);
    const { seq } = await room.joined();
    const w = writer(s.db, s.project, "listener-");
    await until(() => got.events.length >= 3, "events before the kill");
    const dbName = new URL(s.db).pathname.slice(1);
    for (let i = 0; i < 3; i++) {
      const killed = await psql(
        s.db,
        `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'boardcast-listener' AND datname = '${dbName}'`,
      );
      assert.equal(killed, "1");
      const before = w.count;
      await until(() => w.count >= before + 5, "writes after the kill");
    }
    await w.stop();
    await deliveredExactly(s.db, s.project, room, got, seq);
    assert.equal(got.joins.length, 1, "the client never noticed");
    c.close();
  });
  test("the socket cut under the client, while writes go on", async () => {
    const proxy = await new TcpProxy(s.server.port).start();
    const c = client(proxy.ws, { token: s.token });
    const room = c.join(s.project);
    const got = record(room);
    const { seq } = await room.joined();
    const w = writer(s.db, s.project, "cut-");
    for (let i = 0; i < 3; i++) {
      const before = got.events.length;
      await until(() => got.events.length >= before + 3, "events before the cut");
      proxy.sever();
      await until(() => got.joins.length === i + 2, "the rejoin after the cut");
    }
    await w.stop();
    await deliveredExactly(s.db, s.project, room, got, seq);
    c.close();
    await proxy.close();
  });
  test("a silent network cut: the client's ping finds the socket dead, reconnects and resumes", async () => {
    const proxy = await new TcpProxy(s.server.port).start();
    const c = client(proxy.ws, { token: s.token, pingInterval: 300, pingTimeout: 600, timeout: 1000 });
    const statuses = [];
    c.on("status", (x) => statuses.push(x));
    const room = c.join(s.project);
    const got = record(room);
    const { seq } = await room.joined();
    proxy.blackhole();
    await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${s.project}', 'into the void')`);
    await until(() => statuses.some((x) => x.reason === "ping_timeout"), "the ping to time out");
    proxy.heal();
    await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${s.project}', 'after')`);
    await deliveredExactly(s.db, s.project, room, got, seq);
    c.close();
    await proxy.close();
  });
  test("offline while 1,000 events are written: the client catches up with none missed", async () => {
    const proxy = await new TcpProxy(s.server.port).start();
    const c = client(proxy.ws, { token: s.token, backoffMax: 1000 });
    const room = c.join(s.project);
    const got = record(room);
    const { seq } = await room.joined();
    await proxy.down();
    await until(() => c.state === "disconnected", "the client to notice");
    await insertTasks(s.db, s.project, 1000, "offline-");
    assert.equal(got.events.length, 0);
    await proxy.up();
    await deliveredExactly(s.db, s.project, room, got, seq);
    assert.equal(got.events.length, 1000);
    assert.deepEqual(
      got.events.map((e) => e.row.title),
      Array.from({ length: 1000 }, (_, i) => `offline-${i}`),
    );
    c.close();
    await proxy.close();
  });
});

describe("PostgreSQL restarted", () => {
  let cluster;
  before(async () => {
    cluster = await Cluster.start();
  });
  after(() => cluster?.destroy());
  test("every committed event delivered once, in order; a join during the outage is retried until it succeeds", async () => {
    const s = await setup({ serverUrl: cluster.url });
    const c = client(s.server.ws, { token: s.token });
    const errors = [];
    c.on("frame", (f) => f.op === "error" && errors.push(f.code));
    const room = c.join(s.project);
    const got = record(room);
    const { seq } = await room.joined();
    const other = await cli(s.db, "project", "add", "other", "alice");
    const w = writer(s.db, s.project, "pg-");
    await until(() => got.events.length >= 5, "events before the restart");
    cluster.stop();
    const late = c.join(other);
    await until(() => errors.includes("unavailable"), "the join to be refused as unavailable");
    await sleep(500);
    cluster.startAgain();
    await late.joined();
    const before = w.count;
    await until(() => w.count >= before + 10, "writes after the restart");
    await w.stop();
    await deliveredExactly(s.db, s.project, room, got, seq);
    c.close();
    await s.server.stop();
    await dropDatabase(s.db);
  });
});


