// What an app writes, type-checked against client.d.ts (`npm run typecheck`, run by the tests). The lines at the
// end, each marked as an expected error, must stay errors: the types catch those mistakes.
import { connect, ConnectionError, RequestError, type Client, type FeedEvent, type Room } from "../../client.js";

interface Task {
  id: string;
  title: string;
  status: "todo" | "doing" | "done";
}

const client: Client = connect("wss://board.example.com/ws", {
  token: async () => "bc_…",
  pingInterval: 20000,
});
client.on("status", ({ state, reason, delay }) => {
  const s: "connecting" | "connected" | "disconnected" | "closed" = state;
  console.log(s, reason ?? "", delay ?? 0);
});

const tasks = new Map<string, Task>();
const room: Room = client.join("6f1c0e2a-0000-4000-8000-000000000000", { since: 41, sinceAt: "2026-11-25T16:38:42Z" });
room.on<Task>("event", { table: "tasks" }, (e: FeedEvent<Task>) => {
  if (e.action === "delete") tasks.delete(e.row.id);
  else tasks.set(e.row.id, e.row);
  const before: Task | undefined = e.old;
  const seq: number = e.seq;
  void before, seq;
});
room.on("event", { action: ["insert", "update"] }, (e) => console.log(e.table, e.row));
room.on("resync", async ({ reason, latest }) => {
  const r: string = reason;
  void r;
  tasks.clear();
  void latest;
});
room.on("status", ({ state }) => {
  if (state === "removed") console.log("access lost");
});
room.on("gap", ({ expected, got }) => console.log(expected, got));
room.on("left", (frame) => console.log(frame.op));

interface Viewing {
  viewing: string;
}
const live: Room = client.join("room-7", { presence: true, broadcastSelf: false });
live.on<Viewing>("presence", (presence, frame) => {
  const n: number = presence.count;
  for (const [user, { metas }] of Object.entries(presence.users ?? {})) {
    for (const m of metas) console.log(user, m.id === live.presenceId, m.state.viewing);
  }
  const op: "presence_state" | "presence_diff" = frame.op;
  void n, op;
});
live.on<{ task: string }>("broadcast", { event: "typing" }, (b) => console.log(b.from.user, b.payload.task));
const sentNow: boolean = live.broadcast("typing", { task: "t9" });
void sentNow;
async function presenceAndAuth(): Promise<void> {
  const t = await live.track({ viewing: "task 9" });
  const id: string = t.id;
  await live.untrack();
  const a = await client.auth("bc_…");
  const exp: string | null = a.expires_at;
  void id, exp;
}
void presenceAndAuth;

async function main(): Promise<void> {
  const info = await room.joined();
  const seq: number = info.seq;
  const last: number | null = room.lastSeq;
  const rtt: number = await client.ping({ timeout: 2000 });
  void seq, last, rtt;
  try {
    const pong = await client.request({ op: "ping" }, { timeout: 1000 });
    console.log(pong.op);
  } catch (e) {
    if (e instanceof RequestError) console.log(e.code, e.retryAfter);
    if (e instanceof ConnectionError) console.log(e.code === "timeout" || e.code === "disconnected");
  }
  const sent: boolean = client.send({ op: "ping" });
  void sent;
  await room.leave();
  client.close();
}
void main;

// @ts-expect-error: a token is required
connect("wss://x/ws", {});
// @ts-expect-error: tables are the feed's four
room.on("event", { table: "users" }, () => {});
// @ts-expect-error: since is a number
client.join("p", { since: "41" });
// @ts-expect-error: lastSeq is read-only
room.lastSeq = 3;
// @ts-expect-error: broadcast needs an event name
live.broadcast();
// @ts-expect-error: presence is read-only
live.presence = null;

// Actor and transaction (issue #15).
const grouped: Room = client.join("room-8", { group: "tx" });
grouped.on("tx", (tx) => {
  const who: string = tx.actor.kind === "user" ? (tx.actor.name ?? tx.actor.id) : `${tx.actor.role}/${tx.actor.application}`;
  const done: boolean = tx.complete && !tx.continued;
  for (const e of tx.events) console.log(who, done, e.seq, e.tx, e.last === true);
});
room.on("event", (e) => {
  const id: string = e.tx;
  if (e.actor.kind === "sql") console.log(id, e.actor.role, e.actor.application);
});
// @ts-expect-error: group is "tx" or absent
client.join("p", { group: "statement" });
