// What the real server never does, so that the client's own checks are shown to work: a scripted WebSocket
// server (the `ws` package's) that skips a seq, repeats one, and leaves a join unanswered.

import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocketServer } from "ws";

import { client, until } from "./harness.js";

const project = "6f1c0e2a-0000-4000-8000-000000000000";
const event = (seq) => ({ op: "event", project, seq, table: "tasks", action: "insert", row: { id: `t${seq}` }, at: `at-${seq}` });

/** A server that records every frame it receives and answers with `script(frame, send, received)`. */
async function scripted(script) {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((r) => wss.on("listening", r));
  const received = [];
  wss.on("connection", (ws) => {
    const send = (f) => ws.send(JSON.stringify(f));
    ws.on("message", (data) => {
      const frame = JSON.parse(String(data));
      received.push(frame);
      script(frame, send, received);
    });
  });
  return {
    url: `ws://127.0.0.1:${wss.address().port}/ws`,
    received,
    close: () => new Promise((r) => wss.close(r)),
  };
}

test("a gap: the room rejoins from its last seq instead of skipping, and a repeated seq is not delivered twice", async () => {
  const server = await scripted((f, send) => {
    if (f.op === "join" && f.since === undefined) {
      send({ op: "joined", project, seq: 10, latest: 10, at: "at-10", ref: f.ref });
      for (const seq of [11, 12, 12, 14, 15]) send(event(seq));
    } else if (f.op === "leave") {
      send({ op: "left", project, reason: "requested", ref: f.ref });
    } else if (f.op === "join") {
      send({ op: "joined", project, seq: f.since, latest: 15, at: `at-${f.since}`, ref: f.ref });
      for (let seq = f.since + 1; seq <= 15; seq++) send(event(seq));
    }
  });
  const c = client(server.url, { token: "t" });
  const room = c.join(project);
  const seqs = [];
  const gaps = [];
  room.on("event", (e) => seqs.push(e.seq));
  room.on("gap", (g) => gaps.push(g));
  await until(() => room.lastSeq === 15, "seq 15");
  assert.deepEqual(seqs, [11, 12, 13, 14, 15]);
  assert.deepEqual(gaps, [{ project, expected: 13, got: 14 }]);
  const ops = server.received.map((f) => [f.op, f.since, f.since_at]);
  assert.deepEqual(ops, [
    ["join", undefined, undefined],
    ["leave", undefined, undefined],
    ["join", 12, "at-12"],
  ]);
  assert.equal(room.lastAt, "at-15");
  c.close();
  await server.close();
});

test("a join left unanswered: after the timeout the room leaves and joins again, and ends up joined", async () => {
  let joins = 0;
  const server = await scripted((f, send) => {
    if (f.op === "join" && ++joins === 1) return; // lost
    if (f.op === "join") send({ op: "joined", project, seq: 3, latest: 3, ref: f.ref });
    if (f.op === "leave") send({ op: "error", code: "not_joined", message: "not in that room", ref: f.ref });
  });
  const c = client(server.url, { token: "t", timeout: 300 });
  const room = c.join(project);
  const info = await room.joined();
  assert.equal(info.seq, 3);
  assert.deepEqual(
    server.received.map((f) => f.op),
    ["join", "leave", "join"],
  );
  c.close();
  await server.close();
});
