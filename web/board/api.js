// The REST API of the server that serves this page (docs/api.md): one function per call the board makes, and
// errors turned into plain words. A stale write (409 with `current`) is an ApiError whose `current` holds the
// row as it is now, so the caller can show it.

export class ApiError extends Error {
  constructor(status, code, message, { field, current } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
    this.current = current;
  }

  /** What to tell the person, in plain words. */
  get plain() {
    switch (this.code) {
      case "network":
        return "Can't reach the server. Check your connection; nothing was saved.";
      case "unauthorized":
        return "Your sign-in is no longer valid. Open the board with a fresh link.";
      case "forbidden":
        return "Only the project's owners (or the comment's author) can do that.";
      case "not_found":
        return "That no longer exists, or you no longer have access to it.";
      case "conflict":
        return this.current ? "Someone changed this meanwhile." : `Not possible right now: ${this.message}`;
      case "invalid":
        return `${this.field && this.field !== "body" ? `${label(this.field)}: ` : ""}${this.message}`;
      case "rate_limited":
        return "Too many attempts. Wait a minute and try again.";
      case "unavailable":
        return "The server can't reach its database right now. Try again in a moment.";
      case "too_large":
        return "That is too long to save.";
      default:
        return `Something went wrong (${this.message || this.status}).`;
    }
  }
}

const LABELS = { title: "Title", description: "Description", body: "Comment", name: "Name", user: "User" };
const label = (field) => LABELS[field] ?? field;

export class Api {
  constructor(token) {
    this.token = token;
  }

  async request(method, path, body) {
    let res;
    try {
      res = await fetch(path, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, "network", "network error");
    }
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const e = data?.error ?? {};
      throw new ApiError(res.status, e.code ?? "error", e.message ?? res.statusText, e);
    }
    return data;
  }

  /** Every page of a list. */
  async all(path) {
    const items = [];
    let cursor = null;
    do {
      const sep = path.includes("?") ? "&" : "?";
      const page = await this.request("GET", `${path}${sep}limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      items.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor);
    return items;
  }

  me = () => this.request("GET", "/api/me");
  projects = () => this.all("/api/projects");
  project = (id) => this.request("GET", `/api/projects/${id}`);
  createProject = (name) => this.request("POST", "/api/projects", { name });
  members = (project) => this.all(`/api/projects/${project}/members`);
  addMember = (project, user) => this.request("POST", `/api/projects/${project}/members`, { user });
  removeMember = (project, user) => this.request("DELETE", `/api/projects/${project}/members/${user}`);
  tasks = (project) => this.all(`/api/projects/${project}/tasks`);
  createTask = (project, fields) => this.request("POST", `/api/projects/${project}/tasks`, fields);
  updateTask = (id, fields) => this.request("PATCH", `/api/tasks/${id}`, fields);
  deleteTask = (id, version) => this.request("DELETE", `/api/tasks/${id}${version ? `?version=${version}` : ""}`);
  comments = (task) => this.all(`/api/tasks/${task}/comments`);
  addComment = (task, body) => this.request("POST", `/api/tasks/${task}/comments`, { body });
  deleteComment = (id) => this.request("DELETE", `/api/comments/${id}`);
}
