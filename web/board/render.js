// Drawing the state (state.js) into the page. Whole-board drawing happens only after a (re)load; a feed event
// redraws the one card it touched (and moves it to its place), so a board of hundreds of cards stays fast under
// a stream of changes. Text always goes in as textContent, never as HTML.

import { STATUSES, actorName, byBoardOrder, state, statusName, userName } from "./state.js";

const $ = (id) => document.getElementById(id);
const cards = new Map(); // task id → its <li>
const lists = new Map(); // status → the column's <ol>
const counts = new Map(); // status → the column's count <span>

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role") e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children);
  return e;
}

/** The columns, then every card. After a load. */
export function renderBoard() {
  const board = $("board");
  board.replaceChildren();
  cards.clear();
  for (const s of STATUSES) {
    const count = el("span", { class: "count" });
    const list = el("ol", { class: "cards", "data-status": s.id, "aria-labelledby": `col-${s.id}` });
    const col = el(
      "section",
      { class: "column", "data-status": s.id },
      el("h2", { id: `col-${s.id}` }, el("span", { text: s.name }), count),
      list,
    );
    lists.set(s.id, list);
    counts.set(s.id, count);
    board.append(col);
  }
  const all = [...state.board.tasks.values()].sort(byBoardOrder);
  for (const t of all) {
    const card = makeCard(t);
    lists.get(t.status)?.append(card);
  }
  renderCounts();
  renderProject();
  renderMembers();
  $("activity").replaceChildren();
  renderActivity();
}

function makeCard(t) {
  const card = el("li", {
    class: "card",
    id: `card-${t.id}`,
    tabIndex: 0,
    draggable: true,
    "data-id": t.id,
    "aria-describedby": "keys-hint",
  });
  card.append(
    el("span", { class: "card-title" }),
    el("span", { class: "card-meta" }, el("span", { class: "assignee" }), el("span", { class: "actor" })),
  );
  cards.set(t.id, card);
  fillCard(card, t);
  return card;
}

function fillCard(card, t) {
  const title = card.querySelector(".card-title");
  if (title.textContent !== t.title) title.textContent = t.title;
  const who = userName(t.assignee_id);
  card.querySelector(".assignee").textContent = who ? `@${who}` : "";
  const a = state.board.actors.get(t.id);
  card.querySelector(".actor").textContent = a?.who ? `${verb(a.action)} by ${a.who}` : "";
  card.querySelector(".card-meta").hidden = !who && !a?.who;
  card.setAttribute("aria-label", `${t.title}, ${statusName(t.status)}${who ? `, assigned to ${who}` : ""}`);
}

const verb = (action) => (action === "insert" ? "created" : "changed");

/** One card after an event or a write: its text, and its place (column and order). */
export function renderCard(id) {
  const t = state.board.tasks.get(id);
  let card = cards.get(id);
  if (!t) {
    if (card) {
      card.remove();
      cards.delete(id);
    }
    return;
  }
  if (!card) card = makeCard(t);
  else fillCard(card, t);
  const list = lists.get(t.status);
  if (!list) return;
  const focused = document.activeElement === card;
  const next = placeIn(list, t, card);
  if (card.parentNode !== list || card.nextSibling !== next) {
    list.insertBefore(card, next);
    if (focused) card.focus();
  }
}

/** The card that `t` goes before in `list` (binary search over the column, which is in board order). */
function placeIn(list, t, self) {
  const items = [...list.children].filter((c) => c !== self);
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const other = state.board.tasks.get(items[mid].dataset.id);
    if (!other || byBoardOrder(other, t) < 0) lo = mid + 1;
    else hi = mid;
  }
  return items[lo] ?? null;
}

export function renderCounts() {
  for (const [status, list] of lists) counts.get(status).textContent = String(list.children.length);
}

export function renderProject() {
  const p = state.board.project;
  $("project-name").textContent = p ? p.name + (p.status === "archived" ? " (archived)" : "") : "";
  document.title = p ? `${p.name} · boardcast` : "boardcast";
  const select = $("project-select");
  select.replaceChildren(
    ...[...state.projects.values()].map((x) => el("option", { value: x.id, text: x.name, selected: x.id === p?.id })),
  );
  select.closest("label").hidden = state.projects.size === 0;
}

export function renderMembers() {
  const ul = $("members");
  const owner = state.board.project?.role === "owner";
  ul.replaceChildren(
    ...[...state.board.members.values()].map((m) => {
      const name = m.user_name ?? "…";
      const li = el("li", {}, avatar(m.user_id, name), el("span", { class: "name", text: name }));
      li.append(el("span", { class: "role", text: m.role }));
      const self = m.user_id === state.me?.id;
      if (owner || self) {
        li.append(
          el("button", {
            type: "button",
            class: "quiet small",
            text: self ? "Leave" : "Remove",
            "aria-label": self ? "Leave this project" : `Remove ${name} from the project`,
            "data-remove": m.user_id,
          }),
        );
      }
      return li;
    }),
  );
  $("add-member").hidden = !owner;
  // Assignee choices follow the members.
  const sel = $("task-assignee");
  const current = sel.value;
  sel.replaceChildren(
    el("option", { value: "", text: "Nobody" }),
    ...[...state.board.members.values()].map((m) => el("option", { value: m.user_id, text: m.user_name ?? "…" })),
  );
  sel.value = current;
}

const HUES = ["h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7"];

/** A colour per person: by their place among the members (distinct for the first eight), else by their id. */
function hue(id) {
  const i = [...state.board.members.keys()].indexOf(id);
  if (i >= 0) return HUES[i % HUES.length];
  let h = 0;
  for (const c of id) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return HUES[h % HUES.length];
}

function avatar(id, name) {
  return el("span", {
    class: `avatar ${hue(id)}`,
    text: (name ?? "?").slice(0, 1).toUpperCase(),
    "aria-hidden": "true",
  });
}

/** One avatar per user present, however many tabs they have open. */
export function renderPresence(presence) {
  const box = $("presence");
  if (!presence) {
    box.replaceChildren();
    return;
  }
  if (!presence.users) {
    box.replaceChildren(el("span", { class: "count", text: `${presence.count} here` }));
    return;
  }
  const ids = Object.keys(presence.users).sort();
  box.replaceChildren(
    ...ids.map((id) => {
      const name = userName(id) ?? "someone";
      const you = id === state.me?.id;
      const a = avatar(id, name);
      a.removeAttribute("aria-hidden");
      a.setAttribute("role", "listitem");
      a.setAttribute("aria-label", you ? `${name} (you)` : name);
      a.title = you ? `${name} (you)` : name;
      a.dataset.user = id;
      if (you) a.classList.add("you");
      return a;
    }),
  );
}

const CONN_TEXT = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  resyncing: "resyncing…",
  removed: "no access",
  closed: "offline",
};

export function renderConn(conn) {
  const badge = $("conn");
  badge.dataset.state = conn;
  badge.textContent = CONN_TEXT[conn] ?? conn;
}

const SHOWN_ACTIVITY = 12;

/** The activity list: the entries not drawn yet go on top, the oldest drop off (no redraw of the others). */
export function renderActivity() {
  const ol = $("activity");
  const drawn = ol.firstElementChild?.activity;
  const fresh = [];
  for (const a of state.board.activity) {
    if (a === drawn || fresh.length === SHOWN_ACTIVITY) break;
    const li = el("li", { text: a.text });
    li.activity = a;
    fresh.push(li);
  }
  if (drawn === undefined) ol.replaceChildren(...fresh);
  else ol.prepend(...fresh);
  while (ol.children.length > SHOWN_ACTIVITY) ol.lastElementChild.remove();
}

// ---- the task dialog ----

export function fillStatusSelect() {
  $("task-status").replaceChildren(...STATUSES.map((s) => el("option", { value: s.id, text: s.name })));
}

/** The form's fields from a task row. */
export function fillTaskForm(t) {
  $("task-title").value = t.title;
  $("task-description").value = t.description ?? "";
  $("task-status").value = t.status;
  $("task-assignee").value = t.assignee_id ?? "";
}

export function renderTaskActor(id) {
  const a = state.board.actors.get(id);
  $("task-actor").textContent = !a?.who ? "" : a.action === "insert" ? `Created by ${a.who}` : `Last changed by ${a.who}`;
}

/** A 409's current row, shown beside the choice to keep one's own edit or take it. */
export function renderConflict(current) {
  const dl = $("conflict-current");
  const who = userName(current.assignee_id);
  dl.replaceChildren(
    el("dt", { text: "Title" }),
    el("dd", { text: current.title }),
    el("dt", { text: "Status" }),
    el("dd", { text: statusName(current.status) }),
    el("dt", { text: "Assignee" }),
    el("dd", { text: who ?? "Nobody" }),
    el("dt", { text: "Description" }),
    el("dd", { text: current.description || "(empty)" }),
  );
  $("conflict").hidden = false;
}

export function renderComments(taskId) {
  const list = state.board.comments.get(taskId);
  const ol = $("comments");
  if (!list) {
    ol.replaceChildren(el("li", { class: "muted", text: "Loading…" }));
    return;
  }
  const items = [...list.values()].sort((a, b) => (a.created_at < b.created_at ? -1 : 1));
  ol.replaceChildren(
    ...(items.length === 0
      ? [el("li", { class: "muted", text: "No comments yet." })]
      : items.map((c) => {
          const li = el(
            "li",
            {},
            el("span", { class: "author", text: userName(c.author_id) ?? "someone" }),
            el("span", { class: "body", text: c.body }),
          );
          if (c.author_id === state.me?.id) {
            li.append(
              el("button", {
                type: "button",
                class: "quiet small",
                text: "Delete",
                "aria-label": "Delete your comment",
                "data-comment": c.id,
              }),
            );
          }
          return li;
        })),
  );
}

export function renderTyping(taskId) {
  const now = Date.now();
  const who = [...(state.board.typing.get(taskId)?.entries() ?? [])]
    .filter(([, until]) => until > now)
    .map(([user]) => userName(user) ?? "Someone");
  $("typing").textContent = who.length === 0 ? "" : `${who.join(", ")} ${who.length === 1 ? "is" : "are"} typing…`;
}

export { actorName };
