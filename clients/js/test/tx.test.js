// Actor and transaction (issue #15) through the client: every event says who made it and in which
// transaction, the last of a transaction is marked, and join(room, { group: "tx" }) hands a transaction over
// as one `tx`.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { cli, client, latestSeq, record, setup, until } from "./harness.js";

describe("actor and transaction", () => {
  let s;
  const clients = [];
  const open = () => {
    const c = client(s.server.ws, { token: s.token });
    clients.push(c);
    return c;
  };

  before(async () => {
    s = await setup();
  });
  after(async () => {
    for (const c of clients) c.close();
    await s.done();
  });

  test("a psql transaction of three statements: three events, one tx, the last marked; grouped, one tx", async () => {
    const project = await cli(s.db, "project", "add", "board", "alice");
    const plain = open().join(project);
    const got = record(plain);
    const grouped = open().join(project, { group: "tx" });
    const txs = [];
    const ungrouped = [];
    grouped.on("tx", (tx) => txs.push(tx));
    grouped.on("event", (e) => ungrouped.push(e));
    await Promise.all([plain.joined(), grouped.joined()]);
    const start = await latestSeq(s.db, project);

    await s.sql(
      `BEGIN;
       INSERT INTO tasks (project_id, title) VALUES ('${project}', 'one'), ('${project}', 'two');
       UPDATE tasks SET status = 'done' WHERE project_id = '${project}' AND title = 'one';
       COMMIT;`,
    );
    await until(() => got.events.length === 3 && txs.length === 1, "three events and one tx");
    const tx = got.events[0].tx;
    assert.match(tx, /^[0-9]+$/);
    assert.deepEqual(
      got.events.map((e) => [e.seq, e.tx, e.last ?? false]),
      [
        [start + 1, tx, false],
        [start + 2, tx, false],
        [start + 3, tx, true],
      ],
    );
    assert.deepEqual(got.events[0].actor, { kind: "sql", role: "postgres", application: "psql" });
    assert.equal(txs[0].tx, tx);
    assert.deepEqual(txs[0].actor, got.events[0].actor);
    assert.deepEqual([txs[0].first_seq, txs[0].last_seq, txs[0].complete], [start + 1, start + 3, true]);
    assert.deepEqual(txs[0].events, got.events);
    assert.equal(grouped.lastSeq, start + 3);
    assert.deepEqual(ungrouped, [], "a grouped room emits tx, not event");

    // An API write: the signed-in user, and the response's tx is the event's.
    const res = await fetch(`${s.server.http}/api/projects/${project}/tasks`, {
      method: "POST",
      headers: { authorization: `Bearer ${s.token}`, "content-type": "application/json" },
      body: JSON.stringify({ title: "from the API" }),
    });
    const body = await res.json();
    assert.equal(res.headers.get("x-boardcast-tx"), body.tx);
    await until(() => txs.length === 2, "the API write's tx");
    assert.equal(txs[1].tx, body.tx);
    assert.equal(txs[1].actor.kind, "user");
    assert.equal(txs[1].actor.name, "alice");
    assert.equal(txs[1].events[0].last, true);
  });

  test("a resume inside a transaction gets the rest of it, continued", async () => {
    const project = await cli(s.db, "project", "add", "resumed", "alice");
    const start = await latestSeq(s.db, project);
    await s.sql(
      `INSERT INTO tasks (project_id, title) SELECT '${project}', 't' || n FROM generate_series(1, 4) n`,
    );
    const room = open().join(project, { group: "tx", since: start + 1 });
    const txs = [];
    room.on("tx", (tx) => txs.push(tx));
    await room.joined();
    await until(() => txs.length === 1, "the rest of the transaction");
    assert.deepEqual([txs[0].first_seq, txs[0].last_seq, txs[0].complete, txs[0].continued], [start + 2, start + 4, true, true]);
    assert.deepEqual(txs[0].events.map((e) => e.seq), [start + 2, start + 3, start + 4]);
  });

  test("group takes only \"tx\"", () => {
    const c = open();
    assert.throws(() => c.join("p", { group: "statement" }), TypeError);
  });
});
