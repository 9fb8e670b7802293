// The board app: sign-in, the feed (through the client library served at /client.js), the user's actions,
// and the scheduling of redraws. The state lives in state.js, the drawing in render.js, the API in api.js.

import { connect } from "/client.js";

import { Api, ApiError } from "./api.js";
import * as render from "./render.js";
import { STATUSES, applyEvent, columnTasks, emptyBoard, loadBoard, positionBetween, state, statusName, upsertTask } from "./state.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "boardcast.token";
const PROJECT_KEY = "boardcast.project";

let api = null;
let client = null;
let room = null;
let current = null; // the open project's id
let everLive = false;
let resyncing = false;

// ---- sign-in ----

function tokenFromFragment() {
  const m = /(?:^|&)token=([^&]+)/.exec(location.hash.slice(1));
  if (!m) return null;
  // Out of the address bar (and the history) at once: a token never sits in a URL longer than needed.
  history.replaceState(null, "", location.pathname + location.search);
  return decodeURIComponent(m[1]);
}

async function start() {
  render.fillStatusSelect();
  wire();
  const fresh = tokenFromFragment();
  if (fresh) sessionStorage.setItem(TOKEN_KEY, fresh);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return showSignIn();
  await signIn(token);
}

function showSignIn(message = "") {
  for (const id of ["app", "empty"]) $(id).hidden = true;
  $("signin").hidden = false;
  $("sign-out").hidden = true;
  $("signin-error").textContent = message;
  render.renderConn("closed");
}

async function signIn(token) {
  api = new Api(token);
  try {
    state.me = await api.me();
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    return showSignIn(e instanceof ApiError ? e.plain : String(e));
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("signin").hidden = true;
  $("sign-out").hidden = false;
  $("me").textContent = state.me.name;
  client = connect("/ws", { token: () => sessionStorage.getItem(TOKEN_KEY) ?? token });
  client.on("status", ({ state: s, reason }) => {
    conn();
    if (s === "closed" && ["unauthorized", "token_revoked", "token_expired"].includes(reason)) {
      sessionStorage.removeItem(TOKEN_KEY);
      notice("Your sign-in is no longer valid (the token was revoked or has expired). Open the board with a fresh link.", [], {
        sticky: true,
      });
    }
  });
  const projects = await api.projects();
  state.projects = new Map(projects.map((p) => [p.id, p]));
  const saved = sessionStorage.getItem(PROJECT_KEY);
  const first = state.projects.has(saved) ? saved : projects[0]?.id;
  if (!first) {
    $("empty").hidden = false;
    return;
  }
  open(first);
}

// ---- one project's board ----

function open(projectId) {
  if (room) {
    room.leave().catch(() => {});
    room = null;
  }
  closeDialog();
  hideNotice();
  state.board = emptyBoard();
  current = projectId;
  everLive = false;
  $("board").classList.remove("ended");
  for (const f of ["new-task", "add-member"]) $(f).inert = false;
  sessionStorage.setItem(PROJECT_KEY, projectId);
  $("empty").hidden = true;
  $("app").hidden = false;
  state.board.project = state.projects.get(projectId) ?? null;
  render.renderBoard();
  const r = client.join(projectId, { load: () => load(projectId), presence: true });
  room = r;
  r.on("event", (e) => {
    if (room !== r) return;
    changed(applyEvent(e));
  });
  r.on("status", ({ state: s, reason }) => {
    if (room !== r) return;
    if (s === "removed" || (s === "left" && reason === "not_found")) removed();
    conn();
  });
  r.on("resync", () => {
    resyncing = true;
    conn();
  });
  r.on("presence", (p) => room === r && render.renderPresence(p));
  r.on("broadcast", { event: "typing" }, (f) => room === r && typing(f));
  r.track({}).catch(() => {});
}

/** The board over HTTP: after the first join, and after every resync. Events wait until it is done. */
async function load(id) {
  try {
    const [project, members, tasks] = await Promise.all([api.project(id), api.members(id), api.tasks(id)]);
    if (current !== id) return;
    loadBoard(project, members, tasks);
    render.renderBoard();
    render.renderPresence(room?.presence);
  } catch (e) {
    if (e instanceof ApiError && e.code === "not_found") removed();
    else notice(e instanceof ApiError ? e.plain : String(e));
  } finally {
    resyncing = false;
    conn();
  }
}

function removed() {
  if (state.board.removed && $("board").classList.contains("ended")) return;
  state.board.removed = true;
  $("board").classList.add("ended");
  for (const f of ["new-task", "add-member"]) $(f).inert = true;
  closeDialog();
  notice("You were removed from this project: this board no longer updates.", [], { sticky: true });
  conn();
}

/** The badge: live, reconnecting, resyncing (or connecting, no access). */
function conn() {
  let c;
  if (!client || client.state === "closed") c = "closed";
  else if (state.board.removed) c = "removed";
  else if (resyncing) c = "resyncing";
  else if (client.state === "connected" && room?.state === "joined") c = "live";
  else c = everLive ? "reconnecting" : "connecting";
  if (c === "live") everLive = true;
  render.renderConn(c);
}

// ---- redraws: batched to one per frame, one card per changed task ----

const dirty = { tasks: new Set(), members: false, project: false, comments: new Set(), activity: false };
let scheduled = false;
let lastFlush = 0;
// At most one redraw per FLUSH_MS: a single change shows at the next frame, and a stream of them (100 a second)
// is drawn in batches, one layout per batch rather than one per change.
const FLUSH_MS = 100;

function changed(what) {
  if (what.task) dirty.tasks.add(what.task);
  if (what.members) dirty.members = true;
  if (what.project) dirty.project = true;
  if (what.comments) dirty.comments.add(what.comments);
  if (what.removed) removed();
  dirty.activity = true;
  if (scheduled) return;
  scheduled = true;
  const run = () => {
    if (scheduled) flush();
  };
  const wait = lastFlush + FLUSH_MS - performance.now();
  if (wait <= 0) {
    // requestAnimationFrame does not run in a hidden tab; the timer does (slowly), so a background board still
    // catches up.
    requestAnimationFrame(run);
    setTimeout(run, FLUSH_MS);
  } else {
    setTimeout(() => requestAnimationFrame(run), wait);
    setTimeout(run, wait + FLUSH_MS);
  }
}

function flush() {
  scheduled = false;
  lastFlush = performance.now();
  if (dirty.members) {
    // The feed's member rows carry ids only: fetch the names.
    refreshMembers();
    dirty.members = false;
  }
  if (dirty.project) render.renderProject();
  for (const id of dirty.tasks) {
    render.renderCard(id);
    if (editing?.id === id) taskChangedWhileOpen();
  }
  if (dirty.tasks.size) render.renderCounts();
  for (const id of dirty.comments) {
    if (editing?.id !== id) continue;
    render.renderComments(id);
    // A comment ends its author's "typing…" at once, not when the typing signal runs out.
    render.renderTyping(id);
  }
  if (dirty.activity) render.renderActivity();
  dirty.tasks.clear();
  dirty.comments.clear();
  dirty.project = dirty.activity = false;
}

async function refreshMembers() {
  const id = state.board.project?.id;
  try {
    const members = await api.members(id);
    if (state.board.project?.id !== id) return;
    state.board.members = new Map(members.map((m) => [m.user_id, m]));
    const me = state.board.members.get(state.me.id);
    if (me) state.board.project = { ...state.board.project, role: me.role };
    render.renderMembers();
    render.renderPresence(room?.presence);
  } catch (e) {
    if (!(e instanceof ApiError && e.code === "not_found")) notice(e instanceof ApiError ? e.plain : String(e));
  }
}

/** After a write of ours: its row now (never older than what the feed gave), and its seq remembered. */
function wrote(res) {
  if (res.seq != null) state.ownSeqs.add(res.seq);
  const a = state.board.actors.get(res.id);
  if (a && a.who == null && res.seq != null) a.who = state.me.name;
  if (res.deleted) {
    state.board.tasks.delete(res.id);
  } else if (res.title !== undefined) {
    upsertTask(res);
  }
  changed({ task: res.id });
}

// ---- notices: errors in plain words, and a removed board ----

function notice(text, actions = [], { sticky = false } = {}) {
  $("notice-text").textContent = text;
  $("notice").querySelector(".notice-actions").replaceChildren(
    ...actions.map(([label, fn]) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.addEventListener("click", () => {
        hideNotice();
        fn();
      });
      return b;
    }),
  );
  $("notice-close").hidden = sticky;
  $("notice").dataset.sticky = sticky ? "1" : "";
  $("notice").hidden = false;
}

function hideNotice() {
  $("notice").hidden = true;
}

const plain = (e) => (e instanceof ApiError ? e.plain : `Something went wrong: ${e?.message ?? e}`);

// ---- moving cards (drag and drop, keys, the dialog's select) ----

async function move(id, status, index) {
  const t = state.board.tasks.get(id);
  if (!t || state.board.removed) return;
  const others = columnTasks(status).filter((x) => x.id !== id);
  const i = Math.max(0, Math.min(index ?? others.length, others.length));
  const position = positionBetween(others[i - 1], others[i]);
  try {
    wrote(await api.updateTask(id, { status, position, version: t.version }));
  } catch (e) {
    if (e instanceof ApiError && e.current) {
      upsertTask(e.current);
      changed({ task: id });
      notice(
        `“${e.current.title}” was changed by someone else before your move; it is in ${statusName(e.current.status)} now.`,
        [["Move it anyway", () => move(id, status, index)]],
      );
    } else {
      notice(plain(e));
    }
  }
}

function cardKeys(ev) {
  const card = ev.target.closest?.(".card");
  if (!card) return;
  const t = state.board.tasks.get(card.dataset.id);
  if (!t) return;
  if (ev.key === "Enter" || ev.key === " ") {
    ev.preventDefault();
    openTask(t.id);
    return;
  }
  if (!ev.altKey) {
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      const sib = ev.key === "ArrowDown" ? card.nextElementSibling : card.previousElementSibling;
      sib?.focus();
    }
    return;
  }
  const col = STATUSES.findIndex((s) => s.id === t.status);
  const here = columnTasks(t.status).findIndex((x) => x.id === t.id);
  if (ev.key === "ArrowRight" && col < STATUSES.length - 1) move(t.id, STATUSES[col + 1].id);
  else if (ev.key === "ArrowLeft" && col > 0) move(t.id, STATUSES[col - 1].id);
  else if (ev.key === "ArrowUp" && here > 0) move(t.id, t.status, here - 1);
  else if (ev.key === "ArrowDown") move(t.id, t.status, here + 1);
  else return;
  ev.preventDefault();
}

function wireDrag() {
  const board = $("board");
  let dragged = null;
  board.addEventListener("dragstart", (ev) => {
    const card = ev.target.closest?.(".card");
    if (!card) return;
    dragged = card.dataset.id;
    ev.dataTransfer.setData("text/plain", dragged);
    ev.dataTransfer.effectAllowed = "move";
    card.classList.add("dragging");
  });
  board.addEventListener("dragend", (ev) => {
    ev.target.closest?.(".card")?.classList.remove("dragging");
    for (const c of board.querySelectorAll(".drop")) c.classList.remove("drop");
    dragged = null;
  });
  board.addEventListener("dragover", (ev) => {
    const col = ev.target.closest?.(".column");
    if (!col || !dragged) return;
    ev.preventDefault();
    for (const c of board.querySelectorAll(".drop")) if (c !== col) c.classList.remove("drop");
    col.classList.add("drop");
  });
  board.addEventListener("drop", (ev) => {
    const col = ev.target.closest?.(".column");
    const id = ev.dataTransfer.getData("text/plain") || dragged;
    if (!col || !id) return;
    ev.preventDefault();
    col.classList.remove("drop");
    // The index: before the card the pointer is over, if it is in the upper half of it.
    const status = col.dataset.status;
    const over = ev.target.closest?.(".card");
    let index;
    if (over && over.dataset.id !== id) {
      const list = columnTasks(status).filter((x) => x.id !== id);
      index = list.findIndex((x) => x.id === over.dataset.id);
      const r = over.getBoundingClientRect();
      if (ev.clientY > r.top + r.height / 2) index += 1;
    }
    move(id, status, index);
  });
}

// ---- the task dialog: edit, the 409, delete, comments, typing ----

let editing = null; // { id, base: the row the form started from, dirty: whether the person changed a field }

function openTask(id) {
  const t = state.board.tasks.get(id);
  if (!t) return;
  editing = { id, base: t, dirty: false, deleteArmed: false };
  render.fillTaskForm(t);
  render.renderTaskActor(id);
  $("conflict").hidden = true;
  $("task-stale").hidden = true;
  $("task-error").textContent = "";
  $("task-delete").textContent = "Delete";
  $("comment-body").value = "";
  render.renderComments(id);
  render.renderTyping(id);
  const dialog = $("task-dialog");
  if (!dialog.open) dialog.showModal();
  $("task-title").focus();
  if (!state.board.comments.has(id)) {
    api.comments(id).then(
      (list) => {
        state.board.comments.set(id, new Map(list.map((c) => [c.id, c])));
        if (editing?.id === id) render.renderComments(id);
      },
      (e) => editing?.id === id && ($("task-error").textContent = plain(e)),
    );
  }
}

function closeDialog() {
  const d = $("task-dialog");
  const id = editing?.id;
  editing = null;
  if (d.open) d.close();
  if (id) document.getElementById(`card-${id}`)?.focus();
}

/** The open task changed on the board (someone else, or our own write). */
function taskChangedWhileOpen() {
  const t = state.board.tasks.get(editing.id);
  if (!t) {
    $("task-error").textContent = "This task was deleted meanwhile.";
    $("task-save").disabled = true;
    return;
  }
  render.renderTaskActor(t.id);
  if (!editing.dirty) {
    editing.base = t;
    render.fillTaskForm(t);
  } else if (Number(t.version) > Number(editing.base.version)) {
    const a = state.board.actors.get(t.id);
    $("task-stale").textContent = `Changed${a?.who ? ` by ${a.who}` : ""} while you were editing: saving will show you both versions.`;
    $("task-stale").hidden = false;
  }
}

function formFields() {
  return {
    title: $("task-title").value.trim(),
    description: $("task-description").value,
    status: $("task-status").value,
    assignee_id: $("task-assignee").value || null,
  };
}

/** The fields the person changed, compared with the row the form started from. */
function edits(base) {
  const f = formFields();
  const out = {};
  for (const [k, v] of Object.entries(f)) if ((base[k] ?? null) !== v && !(k === "description" && !base[k] && !v)) out[k] = v;
  return out;
}

async function save(fields, version) {
  const id = editing.id;
  const t = state.board.tasks.get(id);
  if (fields.status && fields.status !== t?.status) {
    const others = columnTasks(fields.status);
    fields.position = positionBetween(others[others.length - 1], null);
  }
  $("task-error").textContent = "";
  try {
    wrote(await api.updateTask(id, { ...fields, version }));
    closeDialog();
  } catch (e) {
    if (e instanceof ApiError && e.current) {
      upsertTask(e.current);
      changed({ task: id });
      editing.conflict = { mine: fields, current: e.current };
      render.renderConflict(e.current);
    } else {
      $("task-error").textContent = plain(e);
    }
  }
}

function wireDialog() {
  const form = $("task-form");
  form.addEventListener("input", () => editing && (editing.dirty = true));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!editing) return;
    const changes = edits(editing.base);
    if (Object.keys(changes).length === 0) return closeDialog();
    // The feed already says the task moved on since the form was filled: show it now rather than send a write
    // the server would refuse (the 409 path below is for changes the feed had not delivered yet).
    const now = state.board.tasks.get(editing.id);
    if (now && Number(now.version) > Number(editing.base.version)) {
      editing.conflict = { mine: changes, current: now };
      render.renderConflict(now);
      return;
    }
    save(changes, editing.base.version);
  });
  $("task-close").addEventListener("click", closeDialog);
  $("task-dialog").addEventListener("close", () => {
    if (editing) closeDialog();
  });
  $("conflict-mine").addEventListener("click", () => {
    const c = editing?.conflict;
    if (!c) return;
    $("conflict").hidden = true;
    editing.base = c.current;
    save({ ...c.mine }, c.current.version);
  });
  $("conflict-theirs").addEventListener("click", () => {
    const c = editing?.conflict;
    if (!c) return;
    $("conflict").hidden = true;
    $("task-stale").hidden = true;
    editing.base = c.current;
    editing.dirty = false;
    render.fillTaskForm(c.current);
  });
  $("task-delete").addEventListener("click", async () => {
    if (!editing) return;
    // Two steps instead of confirm(): a modal browser prompt would block the page's feed.
    if (!editing.deleteArmed) {
      editing.deleteArmed = true;
      $("task-delete").textContent = "Really delete?";
      return;
    }
    try {
      wrote(await api.deleteTask(editing.id, editing.base.version));
      closeDialog();
    } catch (e) {
      if (e instanceof ApiError && e.current) {
        upsertTask(e.current);
        changed({ task: editing.id });
        editing.conflict = { mine: {}, current: e.current };
        render.renderConflict(e.current);
        $("task-error").textContent = "Not deleted: it changed meanwhile. Look at it now, then delete again if you still want to.";
        editing.base = e.current;
        editing.deleteArmed = false;
        $("task-delete").textContent = "Delete";
      } else {
        $("task-error").textContent = plain(e);
      }
    }
  });
  let lastTyping = 0;
  $("comment-body").addEventListener("input", () => {
    const now = Date.now();
    if (editing && room && now - lastTyping > 1500) {
      lastTyping = now;
      room.broadcast("typing", { task: editing.id });
    }
  });
  $("comment-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!editing) return;
    const body = $("comment-body").value.trim();
    if (!body) return;
    try {
      const c = await api.addComment(editing.id, body);
      state.board.comments.get(c.task_id)?.set(c.id, c);
      $("comment-body").value = "";
      render.renderComments(c.task_id);
    } catch (e) {
      $("task-error").textContent = plain(e);
    }
  });
  $("comments").addEventListener("click", async (ev) => {
    const id = ev.target.dataset?.comment;
    if (!id || !editing) return;
    try {
      await api.deleteComment(id);
      state.board.comments.get(editing.id)?.delete(id);
      render.renderComments(editing.id);
    } catch (e) {
      $("task-error").textContent = plain(e);
    }
  });
}

function typing(frame) {
  const task = frame.payload?.task;
  if (typeof task !== "string") return;
  const who = frame.from?.user;
  if (!state.board.typing.has(task)) state.board.typing.set(task, new Map());
  state.board.typing.get(task).set(who, Date.now() + 3000);
  if (editing?.id === task) render.renderTyping(task);
  setTimeout(() => editing?.id === task && render.renderTyping(task), 3100);
}

// ---- the rest of the page ----

function wire() {
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn($("signin-token").value.trim());
  });
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    client?.close();
    client = room = null;
    showSignIn();
  });
  $("notice-close").addEventListener("click", hideNotice);
  $("project-select").addEventListener("change", (ev) => open(ev.target.value));
  $("new-task").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("new-title");
    const title = input.value.trim();
    if (!title || !state.board.project) return;
    try {
      wrote(await api.createTask(state.board.project.id, { title }));
      input.value = "";
    } catch (e) {
      notice(plain(e));
    }
  });
  $("add-member").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = $("member-name").value.trim();
    try {
      await api.addMember(state.board.project.id, name);
      $("member-name").value = "";
      refreshMembers();
    } catch (e) {
      notice(e instanceof ApiError && e.code === "not_found" ? `There is no user named “${name}”.` : plain(e));
    }
  });
  $("members").addEventListener("click", async (ev) => {
    const user = ev.target.dataset?.remove;
    if (!user) return;
    try {
      await api.removeMember(state.board.project.id, user);
      refreshMembers();
    } catch (e) {
      notice(plain(e));
    }
  });
  const create = (input) => async (ev) => {
    ev.preventDefault();
    try {
      const p = await api.createProject($(input).value.trim());
      $(input).value = "";
      state.projects.set(p.id, p);
      open(p.id);
    } catch (e) {
      notice(plain(e));
    }
  };
  $("new-project").addEventListener("submit", create("new-project-name"));
  $("first-project").addEventListener("submit", create("first-project-name"));
  const board = $("board");
  board.addEventListener("keydown", cardKeys);
  board.addEventListener("click", (ev) => {
    const card = ev.target.closest?.(".card");
    if (card) openTask(card.dataset.id);
  });
  wireDrag();
  wireDialog();
}

start().catch((e) => notice(plain(e)));
