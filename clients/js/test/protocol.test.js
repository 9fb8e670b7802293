// Every frame and error of docs/protocol.md, through the client, against a real server and database.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import { after, before, describe, test } from "node:test";

import WebSocket from "ws";

import { ConnectionError, RequestError } from "../client.js";
import { TcpProxy, cli, client, latestSeq, psql, record, recorded, setup, until } from "./harness.js";

describe("frames", () => {
  let s;
  const clients = [];
  const open = (options = {}, url = s.server.ws) => {
    const c = client(url, { token: s.token, ...options });
    clients.push(c);
    return c;
  };
  const newProject = async (name = "p") => cli(s.db, "project", "add", name, "alice");

  before(async () => {
    s = await setup();
  });
  after(async () => {
    for (const c of clients) c.close();
    await s.done();
  });

  test("joined, then every event once and in order: inserts, updates with old, deletes, from SQL and the API", async () => {
    const project = await newProject();
    const c = open();
    const statuses = [];
    c.on("status", (st) => statuses.push(st.state));
    const room = c.join(project);
    const got = record(room);
    const info = await room.joined();
    const start = await latestSeq(s.db, project);
    assert.equal(info.seq, start);
    assert.equal(info.latest, start);
    assert.equal(typeof info.at, "string");
    assert.equal(info.resumed, false);
    assert.equal(room.state, "joined");
    assert.equal(room.lastSeq, start);
    assert.deepEqual(statuses, ["connecting", "connected"]);

    const tasks = [];
    const comments = [];
    room.on("event", { table: "tasks" }, (e) => tasks.push(e.seq));
    room.on("event", { table: "comments", action: ["insert", "delete"] }, (e) => comments.push(e.action));

    await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${project}', 'from psql')`);
    await s.sql(`UPDATE tasks SET title = 'renamed' WHERE project_id = '${project}'`);
    const res = await fetch(`${s.server.http}/api/projects/${project}/tasks`, {
      method: "POST",
      headers: { authorization: `Bearer ${s.token}`, "content-type": "application/json" },
      body: JSON.stringify({ title: "from the API" }),
    });
    assert.equal(res.status, 201);
    const apiSeq = (await res.json()).seq;
    await s.sql(
      `INSERT INTO comments (task_id, body) SELECT id, 'hi' FROM tasks WHERE project_id = '${project}' AND title = 'renamed'`,
    );
    await s.sql(`UPDATE comments SET body = 'edited'`);
    await s.sql(`DELETE FROM comments`);
    await s.sql(`DELETE FROM tasks WHERE project_id = '${project}' AND title = 'renamed'`);

    const want = await recorded(s.db, project, start);
    assert.equal(want.length, 7);
    await until(() => got.events.length === 7, "7 events");
    assert.deepEqual(got.events, want);
    assert.deepEqual(got.events.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7].map((i) => start + i));
    const update = got.events[1];
    assert.equal(update.action, "update");
    assert.equal(update.row.title, "renamed");
    assert.equal(update.old.title, "from psql");
    assert.equal(got.events[2].seq, apiSeq);
    assert.deepEqual(tasks, [start + 1, start + 2, start + 3, start + 7]);
    assert.deepEqual(comments, ["insert", "delete"]);
    assert.equal(room.lastSeq, start + 7);
    assert.equal(room.lastAt, want[6].at);
  });

  test("join with since and sinceAt replays what came after, then live events, with no gap at the seam", async () => {
    const project = await newProject();
    await psql(s.db, `INSERT INTO tasks (project_id, title) VALUES ('${project}', 'a'), ('${project}', 'b')`);
    const latest = await latestSeq(s.db, project);
    const at = await psql(s.db, `SELECT to_json(at) #>> '{}' FROM feed_events WHERE room = '${project}' AND seq = ${latest - 2}`);
    const room = open().join(project, { since: latest - 2, sinceAt: at });
    const got = record(room);
    const info = await room.joined();
    assert.equal(info.seq, latest - 2);
    assert.equal(info.resumed, true);
    await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${project}', 'c')`);
    await until(() => got.events.length === 3, "2 replayed events and a live one");
    assert.deepEqual(got.events, await recorded(s.db, project, latest - 2));
  });

  test("leave: left, and nothing more from that room", async () => {
    const project = await newProject();
    const c = open();
    const room = c.join(project);
    const got = record(room);
    await room.joined();
    assert.equal(c.join(project), room, "joining again gives the same room");
    await room.leave();
    assert.equal(room.state, "left");
    assert.deepEqual(got.statuses.map((x) => [x.state, x.reason]), [["joined", undefined], ["leaving", undefined], ["left", "requested"]]);
    assert.deepEqual(c.rooms, []);
    // The server is no longer sending it: a second room, joined after the write, sees the write; the left one does not.
    const other = c.join(await newProject());
    await other.joined();
    await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${project}', 'after leaving')`);
    assert.equal((await c.request({ op: "ping" })).op, "pong");
    assert.equal(got.events.length, 0);
    await assert.rejects(room.joined(), /left: requested/);
  });

  test("removed from the project: left with removed, the room stops, the client carries on", async () => {
    const project = await newProject();
    const bobToken = await cli(s.db, "user", "add", `bob-${randomUUID().slice(0, 8)}`);
    const bobName = await psql(s.db, `SELECT name FROM users ORDER BY created_at DESC LIMIT 1`);
    await cli(s.db, "member", "add", project, bobName);
    const bob = open({ token: bobToken });
    const room = bob.join(project);
    const got = record(room);
    await room.joined();
    await s.sql(`DELETE FROM project_members WHERE project_id = '${project}' AND user_id = (SELECT id FROM users WHERE name = '${bobName}')`);
    await until(() => room.state === "removed", "the room to be removed");
    assert.deepEqual(got.statuses.at(-1), { state: "removed", reason: "removed" });
    assert.equal(got.events.at(-1).table, "project_members");
    assert.equal(got.events.at(-1).action, "delete");
    assert.equal(bob.state, "connected");
    assert.deepEqual(bob.rooms, []);
    await bob.ping();
  });

  test("ping: pong with the request's ref", async () => {
    const c = open();
    await until(() => c.state === "connected", "connected");
    const rtt = await c.ping();
    assert.equal(typeof rtt, "number");
    const pong = await c.request({ op: "ping" });
    assert.equal(pong.op, "pong");
    assert.equal(typeof pong.ref, "number");
  });

  test("every error code a request can get, and the connection stays usable", async () => {
    const project = await newProject();
    const c = open();
    const frames = [];
    c.on("frame", (f) => frames.push(f));
    await until(() => c.state === "connected", "connected");
    const code = async (frame) => {
      const err = await c.request(frame).then(
        () => null,
        (e) => e,
      );
      assert.ok(err instanceof RequestError, `${JSON.stringify(frame)} should be refused`);
      return err.code;
    };
    assert.equal(await code({ op: "shout" }), "unknown_op");
    assert.equal(await code({ op: "join", project: "a\nb" }), "bad_project");
    assert.equal(await code({ op: "join", project: "12" }), "not_found", "a room key no rule lets you into");
    assert.equal(await code({ op: "join" }), "bad_project");
    assert.equal(await code({ op: "join", project, since: -1 }), "bad_since");
    assert.equal(await code({ op: "join", project, since_at: "2026-01-01T00:00:00Z" }), "bad_since");
    assert.equal(await code({ op: "join", project: randomUUID() }), "not_found");
    assert.equal(await code({ op: "leave", project }), "not_joined");
    const room = c.join(project);
    await room.joined();
    assert.equal(await code({ op: "join", project }), "already_joined");
    // Frames no request could send: errors without a ref.
    frames.length = 0;
    c.send("{not json");
    c.send("[1, 2]");
    c.send({ ref: 1 });
    await until(() => frames.filter((f) => f.op === "error").length >= 3, "three errors");
    const codes = frames.filter((f) => f.op === "error" && f.ref === undefined).map((f) => f.code);
    assert.deepEqual(codes.slice(0, 2), ["bad_json", "bad_frame"]);
    assert.ok(frames.some((f) => f.op === "error" && f.code === "bad_frame" && f.ref === 1));
    assert.equal(room.state, "joined");
    const got = [];
    room.on("event", (e) => got.push(e));
    await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${project}', 'still here')`);
    await until(() => got.length === 1, "the event after the errors");
  });

  test("a join the server refuses ends the room with the reason; joined() rejects", async () => {
    const c = open();
    const missing = c.join(randomUUID());
    await assert.rejects(missing.joined(), (e) => e.state === "left" && e.reason === "not_found");
    assert.equal(missing.state, "left");
    const bad = c.join("x".repeat(201));
    await assert.rejects(bad.joined(), (e) => e.reason === "bad_project");
    const ahead = c.join(await newProject(), { since: 1, sinceAt: "not a time" });
    await assert.rejects(ahead.joined(), (e) => e.reason === "bad_since");
    assert.deepEqual(c.rooms, []);
  });

  test("requests are not queued while disconnected, and time out", async () => {
    const c = client(s.server.ws, { token: s.token, timeout: 300 });
    await assert.rejects(c.request({ op: "ping" }), (e) => e instanceof ConnectionError && e.code === "disconnected");
    assert.equal(c.send({ op: "ping" }), false);
    c.close();
  });

  describe("resync", () => {
    test("since_ahead: handed to the app, then the room goes on from the latest seq", async () => {
      const project = await newProject();
      const latest = await latestSeq(s.db, project);
      const room = open().join(project, { since: latest + 100 });
      const got = record(room);
      await until(() => got.resyncs.length === 1, "a resync");
      assert.deepEqual(got.resyncs[0], { project, reason: "since_ahead", latest });
      const info = await room.joined();
      assert.equal(info.seq, latest);
      await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${project}', 'after resync')`);
      await until(() => got.events.length === 1, "the next event");
      assert.equal(got.events[0].seq, latest + 1);
    });

    test("history_rewound: since_at that does not match the recorded event", async () => {
      const project = await newProject();
      const latest = await latestSeq(s.db, project);
      const room = open().join(project, { since: latest, sinceAt: "2001-01-01T00:00:00Z" });
      const got = record(room);
      await room.joined();
      assert.equal(got.resyncs[0].reason, "history_rewound");
    });

    test("history_pruned: resuming from before the retained history", async () => {
      const project = await newProject();
      await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${project}', 'a'), ('${project}', 'b')`);
      await s.sql(`SELECT boardcast_prune_events(NULL, 1)`);
      const room = open().join(project, { since: 1 });
      const got = record(room);
      await room.joined();
      assert.equal(got.resyncs[0].reason, "history_pruned");
      assert.equal(room.lastSeq, await latestSeq(s.db, project));
    });

    test("before_membership: a member added later cannot replay from 0", async () => {
      const project = await newProject();
      await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${project}', 'before carol')`);
      const name = `carol-${randomUUID().slice(0, 8)}`;
      const carol = await cli(s.db, "user", "add", name);
      await cli(s.db, "member", "add", project, name);
      const room = open({ token: carol }).join(project, { since: 0 });
      const got = record(room);
      await room.joined();
      assert.equal(got.resyncs[0].reason, "before_membership");
    });

    test("a resync handler's promise holds the events that follow until the reload is done", async () => {
      const project = await newProject();
      const room = open().join(project, { since: (await latestSeq(s.db, project)) + 5 });
      const order = [];
      let reloaded;
      room.on("resync", () => {
        order.push("resync");
        return new Promise((r) => (reloaded = r));
      });
      room.on("event", (e) => order.push(e.row.title));
      await room.joined();
      await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${project}', 'one'), ('${project}', 'two')`);
      const latest = await latestSeq(s.db, project);
      await until(() => room.lastSeq === latest, "both events received");
      assert.deepEqual(order, ["resync"]);
      order.push("reloaded");
      reloaded();
      await until(() => order.length === 4, "the held events");
      assert.deepEqual(order, ["resync", "reloaded", "one", "two"]);
    });
  });

  test("load: called after the first join and after a resync, not after a resume; the events wait for it", async () => {
    const project = await newProject();
    const proxy = await new TcpProxy(s.server.port).start();
    const c = open({}, proxy.ws);
    const order = [];
    let finish;
    const load = (info) => {
      order.push(`load ${info.reason ?? "first"}`);
      return new Promise((r) => (finish = r));
    };
    const room = c.join(project, { load });
    room.on("event", (e) => order.push(e.row.title));
    await room.joined();
    await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${project}', 'during the load')`);
    await until(async () => room.lastSeq === (await latestSeq(s.db, project)), "the event received");
    assert.deepEqual(order, ["load first"]);
    finish();
    await until(() => order.length === 2, "the held event");
    proxy.sever();
    await until(() => room.state === "joining", "the cut");
    await room.joined();
    assert.deepEqual(order, ["load first", "during the load"], "a resume does not reload");
    await proxy.close();
    const ahead = open().join(project, { since: (await latestSeq(s.db, project)) + 10, load: (info) => order.push(`load ${info.reason}`) });
    await ahead.joined();
    assert.deepEqual(order.slice(2), ["load since_ahead"]);
  });

  describe("tokens", () => {
    test("an unknown token: closed with unauthorized, no reconnect loop", async () => {
      const c = open({ token: "bc_nonsense" });
      const statuses = [];
      c.on("status", (st) => statuses.push(st));
      await until(() => c.state === "closed", "the client to stop");
      assert.equal(statuses.at(-1).reason, "unauthorized");
      assert.equal(statuses.filter((x) => x.state === "connecting").length, 1);
    });

    test("a revoked token (4001): the client stops and its rooms end, with the reason", async () => {
      const token = await cli(s.db, "token", "issue", "alice", "revoked-soon");
      const c = open({ token });
      const room = c.join(await newProject());
      await room.joined();
      const statuses = [];
      c.on("status", (st) => statuses.push(st));
      await cli(s.db, "token", "revoke", token);
      await until(() => c.state === "closed", "the client to stop");
      assert.deepEqual(statuses, [{ state: "closed", reason: "token_revoked", code: 4001 }]);
      assert.equal(room.state, "left");
      await assert.rejects(room.joined(), (e) => e.reason === "token_revoked");
    });

    test("an expired token (4001 at expires_at): the client stops", async () => {
      const token = await cli(s.db, "token", "issue", "alice", "short", "--expires-in", "2");
      const c = open({ token });
      await c.join(await newProject()).joined();
      const statuses = [];
      c.on("status", (st) => statuses.push(st));
      await until(() => c.state === "closed", "the client to stop");
      assert.deepEqual(statuses, [{ state: "closed", reason: "token_expired", code: 4001 }]);
    });

    test("a token getter: called on every connect; after a revocation it hands a new token and the room resumes", async () => {
      const project = await newProject();
      let current = await cli(s.db, "token", "issue", "alice", "first");
      let calls = 0;
      const c = open({
        token: async () => {
          calls++;
          return current;
        },
      });
      const room = c.join(project);
      const got = record(room);
      await room.joined();
      assert.equal(calls, 1);
      const old = current;
      current = await cli(s.db, "token", "issue", "alice", "second");
      await cli(s.db, "token", "revoke", old);
      await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${project}', 'during the swap')`);
      await until(() => got.joins.length === 2, "the rejoin with the new token");
      assert.equal(calls, 2);
      assert.equal(got.joins[1].resumed, true);
      await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${project}', 'after the swap')`);
      const latest = await latestSeq(s.db, project);
      await until(() => room.lastSeq === latest, "every event");
      assert.deepEqual(got.events, await recorded(s.db, project, got.joins[0].seq));
    });

    test("a getter that hands back the refused token: the client stops", async () => {
      const token = await cli(s.db, "token", "issue", "alice", "stale");
      const c = open({ token: () => token });
      await c.join(await newProject()).joined();
      await cli(s.db, "token", "revoke", token);
      await until(() => c.state === "closed", "the client to stop");
    });
  });
});

describe("limits", () => {
  test("too_many_rooms: the room over the limit ends, the others stay", async () => {
    const s = await setup({ env: { BOARDCAST_MAX_ROOMS: "2" } });
    const c = client(s.server.ws, { token: s.token });
    try {
      const projects = [s.project, await cli(s.db, "project", "add", "b", "alice"), await cli(s.db, "project", "add", "c", "alice")];
      const rooms = projects.map((p) => c.join(p));
      await rooms[0].joined();
      await rooms[1].joined();
      await assert.rejects(rooms[2].joined(), (e) => e.reason === "too_many_rooms");
    } finally {
      c.close();
      await s.done();
    }
  });

  test("rate_limited joins are retried after retry_after, until every room is joined", async () => {
    const s = await setup({ env: { BOARDCAST_JOINS_PER_SEC: "2", BOARDCAST_JOIN_BURST: "1" } });
    const c = client(s.server.ws, { token: s.token });
    const refused = [];
    c.on("frame", (f) => f.op === "error" && refused.push(f));
    try {
      const projects = [s.project];
      for (let i = 0; i < 4; i++) projects.push(await cli(s.db, "project", "add", `p${i}`, "alice"));
      const rooms = projects.map((p) => c.join(p));
      await Promise.all(rooms.map((r) => r.joined()));
      assert.ok(refused.length > 0 && refused.every((f) => f.code === "rate_limited" && f.retry_after > 0));
      assert.equal(c.state, "connected");
    } finally {
      c.close();
      await s.done();
    }
  });

  test("close 1008 (a client that ignored rate_limited): reconnect, resume, nothing lost", async () => {
    const s = await setup({ env: { BOARDCAST_MESSAGES_PER_SEC: "1", BOARDCAST_MESSAGE_BURST: "3" } });
    const c = client(s.server.ws, { token: s.token, backoffMin: 1000 });
    const statuses = [];
    c.on("status", (x) => statuses.push(x));
    try {
      const room = c.join(s.project);
      const got = record(room);
      const first = await room.joined();
      for (let i = 0; i < 10; i++) c.send({ op: "leave", project: randomUUID() });
      await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${s.project}', 'while closed')`);
      await until(() => statuses.some((x) => x.code === 1008), "close 1008");
      await until(() => got.joins.length === 2, "the rejoin");
      await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${s.project}', 'after')`);
      const latest = await latestSeq(s.db, s.project);
      await until(() => room.lastSeq === latest, "every event");
      assert.deepEqual(got.events, await recorded(s.db, s.project, first.seq));
    } finally {
      c.close();
      await s.done();
    }
  });

  test("close 1009 (a frame over the limit) and 1001 (idle timeout): reconnect and resume", async () => {
    const s = await setup({ env: { BOARDCAST_IDLE_TIMEOUT_SECS: "2", BOARDCAST_PING_SECS: "1" } });
    // A socket that does not answer the server's pings, and a client that sends no ping of its own for a minute:
    // silent, as a frozen tab would be.
    class Silent extends WebSocket {
      constructor(url) {
        super(url, { autoPong: false });
      }
    }
    const c = client(s.server.ws, { token: s.token, pingInterval: 60000, WebSocket: Silent });
    const codes = [];
    c.on("status", (x) => x.code && codes.push(x.code));
    try {
      const room = c.join(s.project);
      const got = record(room);
      const first = await room.joined();
      c.send({ op: "ping", pad: "x".repeat(20000) });
      await until(() => codes.includes(1009), "close 1009");
      await until(() => codes.includes(1001), "close 1001 (silent for 2 s)");
      await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${s.project}', 'after')`);
      const latest = await latestSeq(s.db, s.project);
      await until(() => room.lastSeq === latest && room.state === "joined", "every event");
      assert.deepEqual(got.events, await recorded(s.db, s.project, first.seq));
    } finally {
      c.close();
      await s.done();
    }
  });
});

describe("url", () => {
  test("an http(s) base URL reaches the feed at /ws", async () => {
    const s = await setup();
    const c = client(s.server.http, { token: s.token });
    try {
      await c.join(s.project).joined();
    } finally {
      c.close();
      await s.done();
    }
  });
});

describe("served by the server", () => {
  test("GET /client.js and /client.d.ts: this very file, as JavaScript, with an ETag, to any origin", async () => {
    const s = await setup();
    try {
      for (const [path, type] of [
        ["/client.js", "text/javascript; charset=utf-8"],
        ["/client.d.ts", "application/typescript; charset=utf-8"],
      ]) {
        const res = await fetch(`${s.server.http}${path}`, { headers: { origin: "https://app.example" } });
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("content-type"), type);
        assert.equal(res.headers.get("access-control-allow-origin"), "https://app.example");
        assert.equal(res.headers.get("x-content-type-options"), "nosniff");
        const file = fs.readFileSync(new URL(`..${path}`, import.meta.url), "utf8");
        assert.equal(await res.text(), file, `${path} is not the file in clients/js: rebuild the server`);
        const etag = res.headers.get("etag");
        assert.match(etag, /^"[0-9a-f]+"$/);
        const again = await fetch(`${s.server.http}${path}`, { headers: { "if-none-match": etag } });
        assert.equal(again.status, 304);
        assert.equal(await again.text(), "");
      }
      const post = await fetch(`${s.server.http}/client.js`, { method: "POST" });
      assert.equal(post.status, 405);
      assert.equal(post.headers.get("allow"), "GET");
      assert.equal((await post.json()).error.code, "method_not_allowed");
    } finally {
      await s.done();
    }
  });
});
