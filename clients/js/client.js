// The boardcast feed client: one WebSocket to a boardcast server, any number of project rooms on it, and the
// reconnect recipe of docs/protocol.md done for you: backoff with jitter, dead-socket detection, reconnect when
// the page comes back online or into view, every room rejoined with `since`/`since_at`, a seq check on every
// event, `resync` handed to the app, and a clean stop when access is lost.
//
// An ES module with no dependencies, for browsers and Node (>= 20; pass `WebSocket` from the `ws` package where
// the runtime has none). The types are in client.d.ts; the guide is README.md beside this file.
//
// The server serves this same file at GET /client.js.

const DEFAULTS = {
  timeout: 10000,
  pingInterval: 15000,
  pingTimeout: 10000,
  backoffMin: 200,
  backoffMax: 5000,
};

/** A request the server answered with an `error` frame. */
export class RequestError extends Error {
  constructor(frame) {
    super(`${frame.code}: ${frame.message}`);
    this.name = "RequestError";
    this.code = frame.code;
    /** Milliseconds to wait before asking again (`rate_limited` only). */
    this.retryAfter = typeof frame.retry_after === "number" ? frame.retry_after : undefined;
    this.frame = frame;
  }
}

/** A request that got no answer in time, or that could not be sent or answered because the socket is down. */
export class ConnectionError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "ConnectionError";
    /** "timeout" or "disconnected". */
    this.code = code;
  }
}

// Listeners by event name, each with an optional filter: every key of the filter must match the payload's value
// (or one of them, for an array). Returns what listeners returned, so `resync` can wait on a reload.
class Emitter {
  #listeners = new Map();

  on(name, filter, listener) {
    if (typeof filter === "function") [filter, listener] = [undefined, filter];
    if (typeof listener !== "function") throw new TypeError(`on("${name}"): a listener function is required`);
    const entry = { filter, listener };
    const list = this.#listeners.get(name) ?? [];
    this.#listeners.set(name, [...list, entry]);
    return () => this.#remove(name, (e) => e === entry);
  }

  off(name, listener) {
    this.#remove(name, (e) => e.listener === listener);
  }

  #remove(name, which) {
    const list = (this.#listeners.get(name) ?? []).filter((e) => !which(e));
    if (list.length) this.#listeners.set(name, list);
    else this.#listeners.delete(name);
  }

  _emit(name, payload, ...rest) {
    const results = [];
    for (const { filter, listener } of this.#listeners.get(name) ?? []) {
      if (filter && !matches(filter, payload)) continue;
      try {
        results.push(listener(payload, ...rest));
      } catch (e) {
        // One listener's bug must not stop delivery to the others, nor lose the client its place in the feed.
        setTimeout(() => {
          throw e;
        });
      }
    }
    return results;
  }
}

function matches(filter, payload) {
  return Object.entries(filter).every(([key, want]) =>
    Array.isArray(want) ? want.includes(payload?.[key]) : payload?.[key] === want,
  );
}

/** Connects to a boardcast server's feed. `url`: `wss://host/ws` (an `https://host` base works too). */
export function connect(url, options) {
  return new Client(url, options);
}

export class Client extends Emitter {
  /** "connecting" | "connected" | "disconnected" | "closed" */
  state = "connecting";
  #url;
  #token;
  #WebSocket;
  #opts;
  #ws = null;
  #opened = false;
  #attempt = 0;
  #currentToken = null;
  #refused = null; // the token the server refused, and why: never sent again
  #backoff;
  #reconnectTimer = null;
  #connectTimer = null;
  #liveTimer = null;
  #lastRx = 0;
  #pingAt = 0;
  #ref = 0;
  #pending = new Map();
  #rooms = new Map();
  // Joins are paced: at most `#joinWindow` in flight; after a `rate_limited` join, none until its retry_after,
  // then one at a time for the client's life (the server closes a client that sends as many refused joins as
  // its burst).
  #joinQueue = [];
  #joinsInFlight = 0;
  #joinWindow = 10;
  #joinGate = 0;
  #joinTimer = null;
  #renewTimer = null;
  #unwatch = () => {};

  constructor(url, options = {}) {
    super();
    this.#url = feedUrl(url);
    if (options.token === undefined) throw new TypeError("connect(url, { token }): a token (or a function returning one) is required");
    this.#token = options.token;
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket in this runtime: pass one, e.g. connect(url, { token, WebSocket }) with WebSocket from the `ws` package");
    }
    this.#opts = { ...DEFAULTS, ...options };
    this.#backoff = this.#opts.backoffMin;
    this.#unwatch = watchPage(() => this.#wake(), () => this.#check());
    queueMicrotask(() => this.#open());
  }

  /** The rooms this client is in or joining. */
  get rooms() {
    return [...this.#rooms.values()];
  }

  /**
   * Joins a room (now, or as soon as the socket is up) and stays in it across reconnects: a project's id, or
   * the room key of an app's own tracked table (a string, or a whole number, which names the room "42").
   * Without `since`, the room starts at its latest seq; with it, events after `since` are replayed first.
   */
  join(project, options = {}) {
    if (this.state === "closed") throw new Error("this client is closed");
    if (Number.isSafeInteger(project)) project = String(project);
    if (typeof project !== "string" || project === "") {
      throw new TypeError("join(room): a room key is required (a project id, or your app's key: a string or an integer)");
    }
    const existing = this.#rooms.get(project);
    if (existing) return existing;
    const room = new Room(this.#link, project, options, this.#opts);
    this.#rooms.set(project, room);
    if (this.#isOpen()) room._connected();
    return room;
  }

  /**
   * Sends a frame with a fresh `ref` and resolves with the server's reply to it, or rejects with a RequestError
   * (an `error` reply) or a ConnectionError (no reply in time, or the socket is down: nothing is queued).
   */
  request(frame, { timeout = this.#opts.timeout } = {}) {
    return new Promise((resolve, reject) => {
      this.#call(frame, timeout, (reply, err) => {
        if (err) reject(err);
        else if (reply.op === "error") reject(new RequestError(reply));
        else resolve(reply);
      });
    });
  }

  /** Sends a frame as it is, if the socket is up; returns whether it was sent. Nothing is queued. */
  send(frame) {
    if (!this.#isOpen()) return false;
    this.#ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    return true;
  }

  /**
   * Hands the connection a fresh token (the same user's) before its current one expires: resolves with the
   * `authed` reply (`expires_at`: when the connection closes unless `auth` comes again). Not queued offline: a
   * reconnect uses the token option anyway.
   */
  async auth(token) {
    if (typeof token !== "string" || token === "") throw new TypeError("auth(token): a token is required");
    const ws = this.#ws;
    const reply = await this.request({ op: "auth", token });
    if (ws === this.#ws) {
      this.#currentToken = token;
      this.#renewBefore(reply.expires_at);
    }
    return reply;
  }

  // With a token getter, the connection is handed a fresh token a little before the one the server named
  // expires (in the last quarter of its life, at most 30 s before), so a long-lived socket is not closed (4001).
  #renewBefore(expiresAt) {
    clearTimeout(this.#renewTimer);
    if (typeof this.#token !== "function" || typeof expiresAt !== "string") return;
    const left = Date.parse(expiresAt) - Date.now();
    if (!Number.isFinite(left)) return;
    const ws = this.#ws;
    this.#renewTimer = setTimeout(async () => {
      let token;
      try {
        token = await this.#token();
      } catch {
        return; // no new token: the socket closes at expiry and the reconnect asks the getter again
      }
      if (ws !== this.#ws || typeof token !== "string" || token === "" || token === this.#currentToken) return;
      this.auth(token).catch(() => {}); // refused: the same, the close at expiry handles it
    }, Math.max(0, left - Math.min(30000, left / 4)));
  }

  /** An application-level ping; resolves with the round trip in milliseconds. */
  async ping({ timeout = this.#opts.pingTimeout } = {}) {
    const started = Date.now();
    await this.request({ op: "ping" }, { timeout });
    return Date.now() - started;
  }

  /** Connects now if the client is waiting to reconnect (skipping the rest of the backoff). */
  reconnect() {
    this.#wake();
  }

  /** Leaves every room and closes the socket, for good. */
  close() {
    this.#stop("closed");
  }

  // ---- what rooms may ask of their client ----

  #link = {
    call: (frame, timeout, done) => this.#call(frame, timeout, done),
    join: (frame, timeout, done) => {
      this.#joinQueue.push({ frame, timeout, done });
      this.#pumpJoins();
    },
    isOpen: () => this.#isOpen(),
    send: (frame) => this.send(frame),
    forget: (room) => {
      if (this.#rooms.get(room.project) === room) this.#rooms.delete(room.project);
    },
    healthy: () => {
      this.#backoff = this.#opts.backoffMin;
    },
  };

  #isOpen() {
    return this.#ws !== null && this.#opened && this.#ws.readyState === 1;
  }

  #call(frame, timeout, done) {
    if (!this.#isOpen()) {
      done(null, new ConnectionError("disconnected", `not connected: ${frame.op} not sent`));
      return;
    }
    const ref = ++this.#ref;
    const timer = setTimeout(() => {
      this.#pending.delete(ref);
      done(null, new ConnectionError("timeout", `no reply to ${frame.op} within ${timeout} ms`));
    }, timeout);
    this.#pending.set(ref, { timer, done });
    this.#ws.send(JSON.stringify({ ...frame, ref }));
  }

  #pumpJoins() {
    clearTimeout(this.#joinTimer);
    while (this.#joinQueue.length && this.#joinsInFlight < this.#joinWindow && this.#isOpen()) {
      const wait = this.#joinGate - Date.now();
      if (wait > 0) {
        this.#joinTimer = setTimeout(() => this.#pumpJoins(), wait);
        return;
      }
      const { frame, timeout, done } = this.#joinQueue.shift();
      this.#joinsInFlight++;
      const ws = this.#ws;
      this.#call(frame, timeout, (reply, err) => {
        if (ws !== this.#ws) return done(reply, err);
        this.#joinsInFlight--;
        if (reply?.op === "error" && reply.code === "rate_limited") {
          this.#joinWindow = 1;
          this.#joinGate = Date.now() + (reply.retry_after ?? 1000);
        }
        done(reply, err);
        this.#pumpJoins();
      });
    }
  }

  #setState(state, detail = {}) {
    this.state = state;
    this._emit("status", { state, ...detail });
  }

  // ---- the connection's life ----

  async #open() {
    if (this.state === "closed") return;
    clearTimeout(this.#reconnectTimer);
    const attempt = ++this.#attempt;
    this.#setState("connecting");
    let token;
    try {
      token = typeof this.#token === "function" ? await this.#token() : this.#token;
    } catch (error) {
      if (attempt === this.#attempt) this.#retry({ reason: "token_unavailable", error });
      return;
    }
    if (attempt !== this.#attempt || this.state === "closed") return;
    if (typeof token !== "string" || token === "") {
      this.#retry({ reason: "token_unavailable", error: new TypeError("the token getter returned no token") });
      return;
    }
    if (this.#refused && token === this.#refused.token) {
      this.#stop(this.#refused.reason);
      return;
    }
    this.#currentToken = token;
    const url = new URL(this.#url);
    url.searchParams.set("token", token);
    let ws;
    try {
      ws = new this.#WebSocket(url.toString());
    } catch (error) {
      this.#retry({ reason: "connect_failed", error });
      return;
    }
    this.#ws = ws;
    this.#opened = false;
    this.#connectTimer = setTimeout(() => this.#lost(ws, { reason: "connect_timeout" }), this.#opts.timeout);
    ws.onopen = () => this.#onOpen(ws);
    ws.onmessage = (ev) => this.#onMessage(ws, ev.data);
    ws.onclose = (ev) => this.#lost(ws, { code: ev.code, reason: ev.reason || "closed" });
    ws.onerror = () => {}; // a close event follows
  }

  #onOpen(ws) {
    if (ws !== this.#ws) return;
    clearTimeout(this.#connectTimer);
    this.#opened = true;
    this.#lastRx = Date.now();
    this.#pingAt = 0;
    this.#setState("connected");
    this.#liveness();
    for (const room of this.#rooms.values()) room._connected();
  }

  #onMessage(ws, data) {
    if (ws !== this.#ws) return;
    this.#lastRx = Date.now();
    if (typeof data !== "string") return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    this._emit("frame", frame);
    if (frame.ref !== undefined && this.#pending.has(frame.ref)) {
      const { timer, done } = this.#pending.get(frame.ref);
      this.#pending.delete(frame.ref);
      clearTimeout(timer);
      if (frame.op === "pong") this.#link.healthy();
      done(frame, null);
      return;
    }
    const room = typeof frame.project === "string" ? this.#rooms.get(frame.project) : undefined;
    if (room) room._frame(frame);
  }

  // Dead-socket detection: after `pingInterval` with nothing received, an app-level ping; if nothing at all
  // (pong or any other frame) arrives within `pingTimeout`, the socket is dead, whatever the OS says.
  #liveness() {
    clearTimeout(this.#liveTimer);
    if (!this.#isOpen()) return;
    const now = Date.now();
    if (this.#pingAt > this.#lastRx) {
      if (now - this.#pingAt >= this.#opts.pingTimeout) {
        this.#lost(this.#ws, { reason: "ping_timeout" });
        return;
      }
      this.#liveTimer = setTimeout(() => this.#liveness(), this.#pingAt + this.#opts.pingTimeout - now);
      return;
    }
    const idle = now - this.#lastRx;
    if (idle >= this.#opts.pingInterval) {
      this.#sendPing();
      return;
    }
    this.#liveTimer = setTimeout(() => this.#liveness(), this.#opts.pingInterval - idle);
  }

  #sendPing() {
    clearTimeout(this.#liveTimer);
    this.#pingAt = Date.now();
    if (this.#pingAt <= this.#lastRx) this.#pingAt = this.#lastRx + 1;
    this.#call({ op: "ping" }, this.#opts.pingTimeout, () => {});
    this.#liveTimer = setTimeout(() => this.#liveness(), this.#opts.pingTimeout);
  }

  // The socket closed, failed to open, or was found dead.
  #lost(ws, info) {
    if (ws !== this.#ws || ws === null) return;
    const wasOpen = this.#opened;
    this.#drop();
    if (this.state === "closed") return;
    if (info.code === 4001) {
      // Revoked or expired: this token is never sent again; a token getter may have a new one.
      const reason = /expired/.test(info.reason) ? "token_expired" : "token_revoked";
      this.#refused = { token: this.#currentToken, reason };
      if (typeof this.#token !== "function") return this.#stop(reason, { code: 4001 });
      this.#setState("disconnected", { ...info, reason, delay: 0 });
      this.#open();
      return;
    }
    if (info.code === 1008 && /joins/.test(info.reason)) this.#joinWindow = 1;
    if (!wasOpen) {
      // The handshake failed, and a browser does not say why: ask the API whether the token is the reason.
      const failed = { ...info, reason: info.reason === "connect_timeout" ? info.reason : "connect_failed" };
      const token = this.#currentToken;
      const attempt = this.#attempt;
      tokenRefused(this.#url, token, this.#opts.timeout).then((refused) => {
        if (attempt !== this.#attempt || this.state === "closed") return;
        if (!refused) return this.#retry(failed);
        this.#refused = { token, reason: "unauthorized" };
        if (typeof this.#token !== "function") return this.#stop("unauthorized");
        this.#retry({ reason: "unauthorized" }); // the getter may have a new token by then
      });
      return;
    }
    this.#retry(info);
  }

  // Forgets the socket: every request waiting on it fails, every room waits to rejoin.
  #drop() {
    const ws = this.#ws;
    this.#ws = null;
    this.#opened = false;
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#liveTimer);
    clearTimeout(this.#renewTimer);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {};
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    clearTimeout(this.#joinTimer);
    this.#joinsInFlight = 0;
    this.#joinGate = 0;
    const queued = this.#joinQueue.splice(0);
    const pending = [...this.#pending.values(), ...queued];
    this.#pending.clear();
    for (const { timer, done } of pending) {
      if (timer) clearTimeout(timer);
      done(null, new ConnectionError("disconnected", "the connection was lost before the reply"));
    }
    for (const room of this.#rooms.values()) room._disconnected();
  }

  // Waits (backoff with jitter) and connects again; while the browser says it is offline, waits for `online`.
  #retry(info) {
    if (this.state === "closed") return;
    clearTimeout(this.#reconnectTimer);
    if (globalThis.navigator?.onLine === false) {
      this.#setState("disconnected", { ...info, reason: "offline" });
      return;
    }
    const base = this.#backoff;
    const delay = Math.round(base + Math.random() * (base / 2));
    this.#backoff = Math.min(this.#opts.backoffMax, base * 2);
    this.#setState("disconnected", { ...info, delay });
    this.#reconnectTimer = setTimeout(() => this.#open(), delay);
  }

  // The page came back (online, or visible): connect now if waiting, check the socket if connected.
  #wake() {
    if (this.state === "disconnected") {
      this.#backoff = this.#opts.backoffMin;
      this.#open();
    } else if (this.state === "connected") {
      this.#check();
    }
  }

  // Checks the socket now: a ping that must be answered within `pingTimeout`.
  #check() {
    if (this.#isOpen()) this.#sendPing();
  }

  #stop(reason, detail = {}) {
    if (this.state === "closed") return;
    this.state = "closed";
    this.#attempt++;
    clearTimeout(this.#reconnectTimer);
    this.#unwatch();
    this.#drop();
    for (const room of [...this.#rooms.values()]) room._end("left", reason);
    this.#rooms.clear();
    this._emit("status", { state: "closed", reason, ...detail });
  }
}

export class Room extends Emitter {
  /** "joining" | "joined" | "leaving" | "left" | "removed" */
  state = "joining";
  /** The seq of the last event delivered (or of the `joined` frame); null before the first join. */
  lastSeq = null;
  /** The `at` of that event, sent as `since_at` on a resume. */
  lastAt = null;
  /**
   * The room's presence (joined with `presence: true`), as the server last told it: `{ users, count }`, `users`
   * mapping each present user to `{ metas: [{ id, state }] }`, or null past the server's limit (then only
   * `count`). null until the first `presence_state`.
   */
  presence = null;
  /** This connection's entry id in presence (from `tracked`), or null while not tracked. */
  presenceId = null;
  project;
  #link;
  #joinOptions;
  #tracked = null; // the state this room tracks (re-sent after every join), or null
  #trackWaiters = [];
  #opts;
  #gen = 0;
  #held = null; // events waiting for the app's reload (see #hold)
  #holding = null;
  #retryTimer = null;
  #unavailable = 0;
  #waiters = [];
  #ended = null;

  constructor(link, project, options, opts) {
    super();
    this.#link = link;
    this.#opts = opts;
    this.project = project;
    if (options.group !== undefined && options.group !== null && options.group !== "tx") {
      throw new TypeError('group: "tx" (one frame per transaction) or absent');
    }
    this.#joinOptions = {
      presence: options.presence === true,
      broadcastSelf: options.broadcastSelf === true,
      groupTx: options.group === "tx",
    };
    if (options.since !== undefined && options.since !== null) {
      if (!Number.isSafeInteger(options.since) || options.since < 0) throw new TypeError("since: a whole number >= 0");
      this.lastSeq = options.since;
      this.lastAt = options.sinceAt ?? null;
    }
    if (options.load) {
      // The app's state over HTTP: after a join that is not a resume (the first), and after every resync.
      const load = options.load;
      this.on("joined", (info) => (info.resumed ? undefined : load(info)));
      this.on("resync", (info) => load(info));
    }
  }

  /** Resolves when the room is (or next becomes) joined; rejects if it is left or removed first. */
  joined() {
    if (this.state === "joined") return Promise.resolve({ project: this.project, seq: this.lastSeq, at: this.lastAt });
    if (this.#ended) return Promise.reject(this.#ended);
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Leaves the room for good; resolves once the server confirmed (or at once when offline). */
  leave() {
    if (this.state === "left" || this.state === "removed") return Promise.resolve();
    return new Promise((resolve) => {
      this.on("status", ({ state }) => {
        if (state === "left" || state === "removed") resolve();
      });
      if (this.state === "leaving") return;
      this.#gen++;
      clearTimeout(this.#retryTimer);
      this.#setState("leaving");
      if (!this.#link.isOpen()) return this._end("left", "requested");
      this.#link.call({ op: "leave", project: this.project }, this.#opts.timeout, () => this._end("left", "requested"));
    });
  }

  /**
   * Be present in the room with `state` (an object); again to change it. Remembered: tracked again after every
   * rejoin (a reconnect, a resync). Resolves with the `tracked` reply once the server has it (while the room is
   * not joined, at its next join); rejects with RequestError if the server refuses the state.
   */
  track(state = {}) {
    if (this.state === "left" || this.state === "removed") return Promise.reject(this.#ended);
    if (state === null || typeof state !== "object" || Array.isArray(state)) {
      return Promise.reject(new TypeError("track(state): state is an object"));
    }
    this.#tracked = state;
    return new Promise((resolve, reject) => {
      this.#trackWaiters.push({ resolve, reject });
      if (this.state === "joined" && this.#link.isOpen()) this.#sendTrack();
    });
  }

  /** No longer present (the room stays joined); forgets the tracked state. */
  untrack() {
    this.#tracked = null;
    this.presenceId = null;
    for (const w of this.#trackWaiters.splice(0)) w.reject(new Error("untracked"));
    if (this.state !== "joined" || !this.#link.isOpen()) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#link.call({ op: "untrack", project: this.project }, this.#opts.timeout, (reply, err) => {
        if (err) reject(err);
        else if (reply.op === "error") reject(new RequestError(reply));
        else resolve(reply);
      });
    });
  }

  /**
   * Sends `payload` to the others in the room as `event`, if the room is joined and the socket is up; returns
   * whether it was sent. Never queued: a broadcast is of the moment.
   */
  broadcast(event, payload = null) {
    if (typeof event !== "string" || event === "") throw new TypeError("broadcast(event, payload): an event name is required");
    if (this.state !== "joined" || !this.#link.isOpen()) return false;
    return this.#link.send({ op: "broadcast", project: this.project, event, payload });
  }

  #sendTrack() {
    const state = this.#tracked;
    const gen = this.#gen;
    this.#link.call({ op: "track", project: this.project, state }, this.#opts.timeout, (reply, err) => {
      if (state !== this.#tracked) return; // changed or untracked meanwhile: that request answers the waiters
      if (err) {
        // Lost with the socket: the next join tracks again. No answer on a live socket: ask again.
        if (err.code === "timeout" && gen === this.#gen && this.state === "joined") this.#sendTrack();
        return;
      }
      const waiters = this.#trackWaiters.splice(0);
      if (reply.op === "error") {
        this.#tracked = null; // refused (e.g. too large): sending it again would be refused again
        for (const w of waiters) w.reject(new RequestError(reply));
        return;
      }
      this.presenceId = reply.id ?? null;
      for (const w of waiters) w.resolve(reply);
    });
  }

  #presence(frame) {
    if (frame.op === "presence_state") {
      const users = frame.users && typeof frame.users === "object" ? { ...frame.users } : null;
      this.presence = { users, count: users ? Object.keys(users).length : (frame.count ?? 0) };
    } else {
      if (!this.presence?.users) return; // a diff with no list to apply it to: the next state replaces it
      const users = { ...this.presence.users };
      for (const part of [frame.joins, frame.updates]) for (const [user, v] of Object.entries(part ?? {})) users[user] = v;
      for (const user of frame.leaves ?? []) delete users[user];
      this.presence = { users, count: Object.keys(users).length };
    }
    this._emit("presence", this.presence, frame);
  }

  #setState(state, reason) {
    this.state = state;
    this._emit("status", reason === undefined ? { state } : { state, reason });
  }

  // ---- called by the client ----

  _connected() {
    if (this.state === "joining") this.#join();
  }

  _disconnected() {
    this.#gen++;
    clearTimeout(this.#retryTimer);
    if (this.state === "joined") this.#setState("joining", "disconnected");
    else if (this.state === "leaving") this._end("left", "requested");
  }

  _end(state, reason) {
    if (this.state === "left" || this.state === "removed") return;
    this.#gen++;
    clearTimeout(this.#retryTimer);
    this.#held = null;
    this.#holding = null;
    this.#link.forget(this);
    this.#ended = Object.assign(new Error(`room ${this.project} ${state}: ${reason}`), { state, reason });
    this.#tracked = null;
    this.presenceId = null;
    this.#setState(state, reason);
    for (const w of this.#waiters.splice(0)) w.reject(this.#ended);
    for (const w of this.#trackWaiters.splice(0)) w.reject(this.#ended);
  }

  _frame(frame) {
    switch (frame.op) {
      case "event":
        return this.#event(frame);
      case "tx":
        return this.#tx(frame);
      case "left":
        if (frame.reason === "removed") this._end("removed", "removed");
        return;
      case "resync":
        if (this.state === "joined" || this.state === "joining") this.#resync(frame);
        return;
      case "presence_state":
      case "presence_diff":
        if (this.state === "joined") this.#presence(frame);
        return;
      case "joined":
        return; // the late answer to a join given up on: the rejoin under way takes over
      default:
        this._emit(frame.op, frame);
    }
  }

  // ---- joining ----

  #join() {
    const gen = ++this.#gen;
    clearTimeout(this.#retryTimer);
    const frame = { op: "join", project: this.project };
    if (this.#joinOptions.presence) frame.presence = true;
    if (this.#joinOptions.broadcastSelf) frame.broadcast = { self: true };
    if (this.#joinOptions.groupTx) frame.group = "tx";
    if (this.lastSeq !== null) {
      frame.since = this.lastSeq;
      if (this.lastAt && this.lastSeq > 0) frame.since_at = this.lastAt;
    }
    this.#link.join(frame, this.#opts.timeout, (reply, err) => {
      if (gen !== this.#gen || this.state !== "joining") return;
      if (err) {
        // No answer in time on a live socket: the server may have joined us after all, so leave first.
        if (err.code === "timeout") this.#rejoin();
        return;
      }
      switch (reply.op) {
        case "joined":
          return this.#joined(reply, frame.since !== undefined);
        case "resync":
          return this.#resync(reply);
        case "error":
          return this.#refused(reply);
      }
    });
  }

  #joined(reply, resumed) {
    this.#unavailable = 0;
    this.#link.healthy();
    const same = reply.seq === this.lastSeq;
    this.lastSeq = reply.seq;
    this.lastAt = reply.at ?? (same ? this.lastAt : null);
    this.#setState("joined");
    if (this.#tracked !== null) this.#sendTrack(); // the server forgot our presence with the old connection
    const info = { project: this.project, seq: reply.seq, latest: reply.latest, at: reply.at ?? null, resumed };
    for (const w of this.#waiters.splice(0)) w.resolve(info);
    this.#hold(this._emit("joined", info));
  }

  // Listeners of `joined` and `resync` may return promises (a reload over HTTP): the events that follow are
  // delivered once they have settled, so none is applied to the state the reload is about to replace.
  #hold(results) {
    const waits = results.filter((r) => r && typeof r.then === "function");
    if (!waits.length) return;
    const held = this.#held ?? [];
    this.#held = held;
    const previous = this.#holding;
    const all = Promise.allSettled([previous, ...waits]);
    this.#holding = all;
    all.then(() => {
      if (this.#held !== held || this.#holding !== all) return; // ended, or another reload began meanwhile
      this.#held = null;
      this.#holding = null;
      for (const [name, e] of held) this._emit(name, e);
    });
  }

  #refused(reply) {
    switch (reply.code) {
      case "unavailable": {
        // The server could not reach its database just now.
        const base = Math.min(this.#opts.backoffMax, this.#opts.backoffMin * 2 ** this.#unavailable++);
        return this.#later(base + Math.random() * (base / 2));
      }
      case "rate_limited":
        return this.#join(); // the client holds it back until retry_after
      case "already_joined":
        return this.#rejoin();
      case "not_found":
        // Never in it (no such project, not a member), or removed while this client was away.
        return this._end(this.lastSeq === null ? "left" : "removed", "not_found");
      default:
        // bad_project, bad_since, too_many_rooms: asking again will not help.
        return this._end("left", reply.code);
    }
  }

  #later(ms) {
    const gen = this.#gen;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      if (gen === this.#gen && this.state === "joining" && this.#link.isOpen()) this.#join();
    }, ms);
  }

  // Leaves (whatever the server thinks) and joins again from lastSeq: after a gap, or a join lost in doubt.
  #rejoin() {
    const gen = ++this.#gen;
    if (this.state === "joined") this.#setState("joining", "rejoin");
    if (!this.#link.isOpen()) return;
    this.#link.call({ op: "leave", project: this.project }, this.#opts.timeout, (_reply, err) => {
      if (gen !== this.#gen || this.state !== "joining") return;
      if (err?.code === "timeout") return this.#rejoin();
      if (!err) this.#join();
    });
  }

  // ---- the feed ----

  #event(frame) {
    if (this.state !== "joined") return; // not ours yet: the rejoin under way replays it
    const seq = frame.seq;
    if (!Number.isSafeInteger(seq) || seq <= this.lastSeq) return; // a duplicate, already delivered
    if (seq !== this.lastSeq + 1) {
      this._emit("gap", { project: this.project, expected: this.lastSeq + 1, got: seq });
      this.#rejoin();
      return;
    }
    this.lastSeq = seq;
    this.lastAt = frame.at ?? null;
    if (this.#held) this.#held.push(["event", frame]);
    else this._emit("event", frame);
  }

  // A transaction's events in one frame (joined with group: "tx"): checked like events one by one; what was
  // delivered already (a replay's overlap) is left out, and the rest is emitted as one `tx`.
  #tx(frame) {
    if (this.state !== "joined" || !Array.isArray(frame.events)) return;
    const events = frame.events.filter((e) => Number.isSafeInteger(e?.seq) && e.seq > this.lastSeq);
    if (!events.length) return; // a duplicate, already delivered
    for (let i = 0; i < events.length; i++) {
      if (events[i].seq !== this.lastSeq + 1 + i) {
        this._emit("gap", { project: this.project, expected: this.lastSeq + 1 + i, got: events[i].seq });
        this.#rejoin();
        return;
      }
    }
    const last = events[events.length - 1];
    this.lastSeq = last.seq;
    this.lastAt = last.at ?? null;
    const tx = events.length === frame.events.length ? frame : { ...frame, events, first_seq: events[0].seq };
    if (this.#held) this.#held.push(["tx", tx]);
    else this._emit("tx", tx);
  }

  // The server cannot prove this room has everything: the app reloads (its handlers may return a promise; the
  // events that follow wait for it), and the room goes on from the server's latest seq.
  #resync(frame) {
    this.#gen++;
    if (this.state === "joined") this.#setState("joining", "resync");
    this.lastSeq = frame.latest;
    this.lastAt = null;
    const info = { project: this.project, reason: frame.reason, latest: frame.latest };
    this.#hold(this._emit("resync", info));
    if (this.#link.isOpen()) this.#join();
  }
}

// ---- helpers ----

// The feed's URL from what the app gave: ws(s) as is, http(s) turned into ws(s), "/ws" added to a bare origin,
// a path resolved against the page's location in a browser.
function feedUrl(url) {
  const base = globalThis.location?.href;
  const u = new URL(String(url), base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new TypeError(`not a ws(s) or http(s) URL: ${url}`);
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws";
  return u.toString();
}

// Whether the server refuses `token` (401 from GET /api/me, beside the feed's /ws). Anything else, a network
// failure included, is not a refusal: the client retries.
async function tokenRefused(wsUrl, token, timeout) {
  if (typeof fetch !== "function") return false;
  const u = new URL(wsUrl);
  u.protocol = u.protocol === "wss:" ? "https:" : "http:";
  u.pathname = u.pathname.replace(/ws\/?$/, "") + "api/me";
  u.search = "";
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeout);
  try {
    const res = await fetch(u, { headers: { authorization: `Bearer ${token}` }, signal: abort.signal });
    return res.status === 401;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

// In a browser: `online` and a tab becoming visible wake the client; `offline` makes it check its socket.
function watchPage(wake, check) {
  const win = globalThis.window;
  const doc = globalThis.document;
  if (!win?.addEventListener) return () => {};
  const onVisible = () => {
    if (doc?.visibilityState === "visible") wake();
  };
  win.addEventListener("online", wake);
  win.addEventListener("offline", check);
  doc?.addEventListener?.("visibilitychange", onVisible);
  return () => {
    win.removeEventListener("online", wake);
    win.removeEventListener("offline", check);
    doc?.removeEventListener?.("visibilitychange", onVisible);
  };
}
