// The board's one state object, and the only functions that change it. Rendering reads it; nothing else keeps
// a copy. Events from the feed arrive once and in seq order (the client library checks); rows are applied as
// upserts and deletes by id, so a reload (after a resync) followed by events that it already reflects changes
// nothing twice. A task row never goes back to a lower `version` (an API answer and its own event may arrive in
// either order).

export const STATUSES = [
  { id: "todo", name: "To do" },
  { id: "in_progress", name: "In progress" },
  { id: "done", name: "Done" },
];
export const statusName = (id) => STATUSES.find((s) => s.id === id)?.name ?? id;

export function emptyBoard() {
  return {
    project: null, // { id, name, status, role }
    tasks: new Map(), // id → task row
    members: new Map(), // user_id → { user_id, user_name, role }
    comments: new Map(), // task id → Map(comment id → comment row), only for tasks whose comments were loaded
    actors: new Map(), // task id → { actor, action, at }: who made the last change the page saw
    presence: { users: new Map(), count: 0 }, // user id → number of connections
    typing: new Map(), // task id → Map(user id → until (ms))
    activity: [], // the latest changes, newest first: { text, at }
    conn: "connecting", // connecting | live | reconnecting | resyncing | removed
    removed: false,
  };
}

export const state = {
  me: null, // { id, name }
  projects: new Map(), // id → { id, name, status, role }
  board: emptyBoard(),
  ownSeqs: new Set(), // seqs of the writes this page made: an event without an actor is then ours
};

/** The board as loaded over HTTP (first join, and every resync). */
export function loadBoard(project, members, tasks) {
  const b = state.board;
  b.project = project;
  b.members = new Map(members.map((m) => [m.user_id, m]));
  b.tasks = new Map(tasks.map((t) => [t.id, t]));
  for (const id of b.comments.keys()) if (!b.tasks.has(id)) b.comments.delete(id);
  state.projects.set(project.id, project);
}

/** Puts a task row in, unless the board already has a newer version. Returns whether it changed anything. */
export function upsertTask(row) {
  const had = state.board.tasks.get(row.id);
  if (had && Number(had.version) > Number(row.version)) return false;
  state.board.tasks.set(row.id, row);
  return true;
}

export function userName(id) {
  if (!id) return null;
  if (state.me && id === state.me.id) return state.me.name;
  return state.board.members.get(id)?.user_name ?? null;
}

/** "Alice", "psql (postgres)", or null when the event does not say (a server without actors). */
export function actorName(event) {
  const a = event.actor;
  if (a?.kind === "user") return a.name ?? userName(a.id) ?? "someone";
  if (a?.kind === "sql") return `${a.application || "SQL"} (${a.role})`;
  if (state.ownSeqs.has(event.seq)) return state.me?.name ?? "you";
  return null;
}

/**
 * Applies one feed event. Returns what to redraw: { task: id } for one card, { members: true },
 * { project: true }, { comments: taskId }, or { removed: true } when this user is no longer a member.
 */
export function applyEvent(e) {
  const b = state.board;
  const who = actorName(e);
  switch (e.table) {
    case "tasks": {
      const row = e.row;
      const before = b.tasks.get(row.id);
      if (e.action === "delete") {
        b.tasks.delete(row.id);
        b.comments.delete(row.id);
        b.typing.delete(row.id);
      } else {
        upsertTask(row);
      }
      b.actors.set(row.id, { who, action: e.action, at: e.at });
      note(describe(e, before, who));
      return { task: row.id };
    }
    case "comments": {
      const row = e.row;
      const list = b.comments.get(row.task_id);
      if (list) {
        if (e.action === "delete") list.delete(row.id);
        else list.set(row.id, row);
      }
      if (e.action === "insert") {
        note(`${who ?? "Someone"} commented on “${b.tasks.get(row.task_id)?.title ?? "a task"}”`);
        b.typing.get(row.task_id)?.delete(row.author_id);
      }
      return { comments: row.task_id };
    }
    case "project_members": {
      const row = e.row;
      if (e.action === "delete") {
        b.members.delete(row.user_id);
        if (state.me && row.user_id === state.me.id) {
          b.removed = true;
          return { removed: true };
        }
      } else {
        const had = b.members.get(row.user_id);
        b.members.set(row.user_id, { ...had, ...row, user_name: had?.user_name ?? null });
      }
      return { members: true };
    }
    case "projects": {
      if (e.action === "delete") {
        b.removed = true;
        return { removed: true };
      }
      b.project = { ...b.project, ...e.row };
      state.projects.set(b.project.id, b.project);
      return { project: true };
    }
    default:
      return {};
  }
}

function describe(e, before, who) {
  const t = e.row;
  const by = who ? ` by ${who}` : "";
  if (e.action === "insert") return `“${t.title}” created${by}`;
  if (e.action === "delete") return `“${t.title}” deleted${by}`;
  const old = e.old ?? before;
  if (old && old.status !== t.status) return `“${t.title}” moved to ${statusName(t.status)}${by}`;
  if (old && old.position !== t.position) return `“${t.title}” reordered${by}`;
  return `“${t.title}” edited${by}`;
}

function note(text) {
  const a = state.board.activity;
  a.unshift({ text, at: Date.now() });
  if (a.length > 30) a.length = 30;
}

/** A position between two neighbours' (either may be missing), as the API's "moving a card" suggests. */
export function positionBetween(before, after) {
  const lo = before ? Number(before.position) : null;
  const hi = after ? Number(after.position) : null;
  if (lo === null && hi === null) return 1024;
  if (lo === null) return hi - 1024;
  if (hi === null) return lo + 1024;
  return (lo + hi) / 2;
}

/** A column's tasks in board order: (position, created_at, id), like the API's list. */
export function columnTasks(status) {
  return [...state.board.tasks.values()].filter((t) => t.status === status).sort(byBoardOrder);
}

export function byBoardOrder(a, b) {
  return (
    Number(a.position) - Number(b.position) ||
    (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0) ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}
