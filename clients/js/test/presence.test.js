// Presence and broadcast through the client, against a real server: what one tab tracks the others see, what
// one sends the others hear, presence comes back on its own after the server restarts, and a broadcast made
// while disconnected is never sent later.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { client, setup, until } from "./harness.js";

/** The presence frames a room delivered, with the state after each. */
function presenceLog(room) {
  const log = [];
  room.on("presence", (presence, frame) => log.push({ presence, frame }));
  return log;
}

const metaStates = (room) =>
  Object.values(room.presence?.users ?? {}).flatMap((u) => u.metas.map((m) => m.state));

describe("presence and broadcast", () => {
  let s;
  before(async () => {
    s = await setup();
  });
  after(async () => {
    await s.done();
  });

  test("B sees what A tracks (state, then diff); A's broadcast reaches B and not A; untrack takes it away", async () => {
    const a = client(s.server.ws, { token: s.token });
    const b = client(s.server.ws, { token: s.token });
    try {
      const ra = a.join(s.project, { presence: true });
      const rb = b.join(s.project, { presence: true });
      const logB = presenceLog(rb);
      await ra.joined();
      await rb.joined();
      await until(() => logB.length >= 1, "B's presence_state");
      assert.equal(logB[0].frame.op, "presence_state");
      assert.deepEqual(rb.presence, { users: {}, count: 0 });

      const tracked = await ra.track({ viewing: "task 9" });
      assert.equal(tracked.op, "tracked");
      assert.equal(ra.presenceId, tracked.id);
      await until(() => metaStates(rb).some((st) => st.viewing === "task 9"), "B to see A present");
      const last = logB.at(-1);
      assert.equal(last.frame.op, "presence_diff");
      assert.equal(last.presence, rb.presence);
      assert.equal(rb.presence.count, 1);
      const ids = Object.values(rb.presence.users).flatMap((u) => u.metas.map((m) => m.id));
      assert.deepEqual(ids, [tracked.id]);

      const gotA = [];
      const gotB = [];
      ra.on("broadcast", (f) => gotA.push(f));
      rb.on("broadcast", (f) => gotB.push(f));
      assert.equal(ra.broadcast("typing", { task: "t9" }), true);
      await until(() => gotB.length === 1, "B to hear A's broadcast");
      assert.equal(gotB[0].event, "typing");
      assert.deepEqual(gotB[0].payload, { task: "t9" });
      assert.equal(gotB[0].from.id, tracked.id);
      // A ping answered after the broadcast: had the server sent it back to A, it would have arrived first.
      await a.ping();
      assert.deepEqual(gotA, []);

      await ra.untrack();
      await until(() => rb.presence.count === 0, "A to leave B's presence");
      assert.equal(ra.presenceId, null);
    } finally {
      a.close();
      b.close();
    }
  });

  test("broadcastSelf: a room joined with it hears its own broadcasts", async () => {
    const a = client(s.server.ws, { token: s.token });
    try {
      const ra = a.join(s.project, { broadcastSelf: true });
      await ra.joined();
      const got = [];
      ra.on("broadcast", (f) => got.push(f));
      assert.equal(ra.broadcast("cursor", { x: 1 }), true);
      await until(() => got.length === 1, "A's own broadcast back");
      assert.deepEqual(got[0].payload, { x: 1 });
    } finally {
      a.close();
    }
  });

  test("after the server is killed and restarted, A is present again without tracking again; an offline broadcast is not sent later", async () => {
    const a = client(s.server.ws, { token: s.token });
    const b = client(s.server.ws, { token: s.token });
    try {
      const ra = a.join(s.project, { presence: true });
      const rb = b.join(s.project, { presence: true });
      await ra.track({ tab: "a" });
      await until(() => metaStates(rb).some((st) => st.tab === "a"), "B to see A");
      const gotB = [];
      rb.on("broadcast", (f) => gotB.push(f));

      await s.server.kill();
      await until(() => a.state !== "connected" && b.state !== "connected", "both to notice");
      assert.equal(ra.broadcast("typing", { offline: true }), false);
      await s.server.start();

      const joinsB = [];
      rb.on("joined", (i) => joinsB.push(i));
      await until(() => ra.state === "joined" && rb.state === "joined", "both to rejoin");
      await until(() => metaStates(rb).some((st) => st.tab === "a"), "A's presence back, tracked by the client");
      assert.ok(ra.presenceId, "A has its new entry id");

      // Broadcasts work again, and the one refused offline never arrives: B hears only the new one.
      assert.equal(ra.broadcast("typing", { online: true }), true);
      await until(() => gotB.length >= 1, "B to hear the new broadcast");
      await b.ping();
      assert.deepEqual(gotB.map((f) => f.payload), [{ online: true }]);
    } finally {
      a.close();
      b.close();
    }
  });

  test("client.auth: a fresh token for the connection is answered with authed; a bad one is refused and the connection carries on", async () => {
    const c = client(s.server.ws, { token: s.token });
    try {
      const room = c.join(s.project);
      await room.joined();
      const reply = await c.auth(s.token);
      assert.equal(reply.op, "authed");
      assert.ok("expires_at" in reply);
      await assert.rejects(c.auth("bc_not_a_token"), (e) => e.name === "RequestError" && e.code === "unauthorized");
      await c.ping();
      assert.equal(c.state, "connected");
    } finally {
      c.close();
    }
  });
});
