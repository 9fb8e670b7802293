// Types of the boardcast feed client (client.js). The frames are those of docs/protocol.md.

/** A token, or a function that returns one (called before every connect: return a fresh one there). */
export type TokenSource = string | (() => string | Promise<string>);

/** The WebSocket constructor the client uses: the runtime's own, or e.g. the `ws` package's on Node 20. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: { data: any }) => any) | null;
  onclose: ((ev: { code: number; reason: string }) => any) | null;
  onerror: ((ev: any) => any) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** An API token, or a function returning one (called on every connect). Sent as `?token=`. */
  token: TokenSource;
  /** The WebSocket constructor; default: `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor | (new (url: string, ...rest: any[]) => any);
  /** How long a request (join, leave, ping) or a connect waits for its answer, in ms. Default 10000. */
  timeout?: number;
  /** After this long (ms) with nothing received, the client pings. Default 15000. */
  pingInterval?: number;
  /** A ping with nothing received within this long (ms) means the socket is dead: reconnect. Default 10000. */
  pingTimeout?: number;
  /** The first reconnect delay (ms), doubled on each failure up to `backoffMax`; plus up to half as jitter. Default 200. */
  backoffMin?: number;
  /** The longest reconnect delay (ms) before jitter. Default 5000. */
  backoffMax?: number;
}

export type ClientState = "connecting" | "connected" | "disconnected" | "closed";

/**
 * Why the client is in its state. For "disconnected": the close `code` and `reason` of the socket, or
 * "connect_failed", "connect_timeout", "ping_timeout", "offline" (waiting for the browser's `online`),
 * "token_unavailable" (the token getter threw: `error`); `delay` is the wait before the next attempt.
 * For "closed": "closed" (`client.close()`), "unauthorized" (the server refuses the token),
 * "token_revoked" or "token_expired" (close 4001), each only after the token getter, if any, had no new token.
 */
export interface ClientStatus {
  state: ClientState;
  reason?: string;
  code?: number;
  delay?: number;
  error?: unknown;
}

export type RoomState = "joining" | "joined" | "leaving" | "left" | "removed";

/**
 * Why the room is in its state. "joining": "disconnected", "rejoin" (after a gap), "resync".
 * "left": "requested" (`room.leave()`), "closed" (the client closed), "unauthorized", "token_revoked",
 * "token_expired", or the error code that refused the join: "not_found", "too_many_rooms", "bad_project", "bad_since".
 * "removed": "removed" (you were removed from the project), "not_found" (removed while offline).
 */
export interface RoomStatus {
  state: RoomState;
  reason?: string;
}

export interface JoinOptions {
  /** Resume after this seq: the events after it are replayed first. */
  since?: number;
  /** The `at` of event `since`, checked by the server (a restored database answers `resync`). */
  sinceAt?: string;
  /**
   * Loads the project's state over HTTP: called after the first join (not after a resume) and after every
   * resync. The events that follow are held until its promise settles, then delivered in order (they may
   * already be reflected in what it loaded: apply them as upserts and deletes).
   */
  load?: (info: JoinInfo | ResyncInfo) => unknown;
  /** Receive the room's presence (`room.presence`, `room.on("presence")`): `presence_state`, then diffs. */
  presence?: boolean;
  /** Receive this connection's own broadcasts too (by default it does not get back what it sent). */
  broadcastSelf?: boolean;
  /**
   * `"tx"`: receive the room's events as one `tx` per transaction (`room.on("tx")`), a large one in parts,
   * instead of one `event` each (`room.on("event")` then hears nothing).
   */
  group?: "tx";
}

/** One connection's entry in a room's presence. */
export interface PresenceMeta<State = Record<string, unknown>> {
  /** The connection's entry id (the `id` of its `tracked` reply and the `from.id` of its broadcasts). */
  id: string;
  state: State;
}

/** A room's presence as the server last told it. */
export interface Presence<State = Record<string, unknown>> {
  /** Each present user (by user id, or JWT `sub`) with one entry per connection that tracks itself; null past the server's limit. */
  users: Record<string, { metas: PresenceMeta<State>[] }> | null;
  /** The number of users present. */
  count: number;
}

export interface PresenceFrame extends Frame {
  op: "presence_state" | "presence_diff";
  project: string;
}

export interface BroadcastFrame<Payload = unknown> {
  op: "broadcast";
  project: string;
  event: string;
  payload: Payload;
  /** Stamped by the server: the sender's user and its connection's entry id. */
  from: { user: string; id: string };
}

export interface TrackedFrame {
  op: "tracked";
  project: string;
  /** This connection's entry id in presence frames and in the `from` of its broadcasts. */
  id: string;
  ref?: unknown;
}

export interface AuthedFrame {
  op: "authed";
  /** When the connection closes unless `auth` comes again; null for a token that does not expire. */
  expires_at: string | null;
  ref?: unknown;
}

export interface JoinInfo {
  project: string;
  /** Events with seq > this follow, exactly once, in order. */
  seq: number;
  latest?: number;
  at: string | null;
  /** Whether the join named `since` (a resume). */
  resumed?: boolean;
}

export type Table = "projects" | "project_members" | "tasks" | "comments";
export type Action = "insert" | "update" | "delete";

export interface FeedEvent<Row = Record<string, unknown>> {
  op: "event";
  project: string;
  seq: number;
  table: Table;
  action: Action;
  /** The row after the change (insert, update) or the deleted row (delete). */
  row: Row;
  /** The row before the change: on update only. */
  old?: Row;
  at: string;
  /** The transaction that made the change: a 64-bit id in decimal (REST write responses carry it too). */
  tx: string;
  /** Who made the change. */
  actor: Actor;
  /** Present (true) on the last event of its transaction in this room: the transaction is all here. */
  last?: true;
}

/**
 * Who made a change: a user (a REST API write, or a SQL writer that called `boardcast.act_as`), or any other
 * SQL writer, by its database role and `application_name`.
 */
export type Actor =
  | { kind: "user"; id: string; name: string | null }
  | { kind: "sql"; role: string; application: string };

/** A transaction's events in one room (joined with `group: "tx"`), or a part of a large one. */
export interface TxFrame<Row = Record<string, unknown>> {
  op: "tx";
  project: string;
  tx: string;
  actor: Actor;
  first_seq: number;
  last_seq: number;
  /** In seq order, each the `event` an ungrouped client gets. */
  events: FeedEvent<Row>[];
  /** Whether this frame ends the transaction (a large one comes in parts: only the final one is complete). */
  complete: boolean;
  /** Present (true) when the frame does not begin at the transaction's first event (a later part, or a resume inside it). */
  continued?: true;
}

export type ResyncReason = "history_pruned" | "since_ahead" | "before_membership" | "history_rewound";

export interface ResyncInfo {
  project: string;
  reason: ResyncReason | string;
  /** The room goes on after this seq: reload state that reflects at least this. */
  latest: number;
}

export interface GapInfo {
  project: string;
  expected: number;
  got: number;
}

/** Keys an event must match: a value, or one of several. */
export interface EventFilter {
  table?: Table | Table[];
  action?: Action | Action[];
  [key: string]: unknown;
}

/** Any frame the server sends. */
export interface Frame {
  op: string;
  [key: string]: any;
}

/** A request the server answered with an `error` frame. */
export class RequestError extends Error {
  readonly code: string;
  /** Milliseconds to wait before asking again (`rate_limited` only). */
  readonly retryAfter?: number;
  readonly frame: Frame;
}

/** No reply in time ("timeout"), or the socket is down ("disconnected"): nothing is queued. */
export class ConnectionError extends Error {
  readonly code: "timeout" | "disconnected";
}

export type Unsubscribe = () => void;

/** The names a Room emits with their own payloads. */
export type RoomEventName = "event" | "tx" | "resync" | "joined" | "status" | "gap" | "presence" | "broadcast";

export class Room {
  readonly project: string;
  readonly state: RoomState;
  /** The seq of the last event delivered, or of the `joined` frame; null before the first join. */
  readonly lastSeq: number | null;
  /** The `at` of that event or frame, sent as `since_at` on a resume. */
  readonly lastAt: string | null;
  /** The room's presence (joined with `presence: true`); null until the first `presence_state`. */
  readonly presence: Presence | null;
  /** This connection's entry id in presence, once tracked; null otherwise. */
  readonly presenceId: string | null;

  /** Every event, in seq order, exactly once; with a filter, only those that match it. */
  on<Row = Record<string, unknown>>(name: "event", listener: (event: FeedEvent<Row>) => void): Unsubscribe;
  on<Row = Record<string, unknown>>(name: "event", filter: EventFilter, listener: (event: FeedEvent<Row>) => void): Unsubscribe;
  /**
   * The server cannot prove the room has everything: reload the project over HTTP. Return a promise to hold
   * the events that follow (seq > `latest`) until it settles.
   */
  /** A transaction's events (or a part of a large one), when joined with `group: "tx"`. */
  on<Row = Record<string, unknown>>(name: "tx", listener: (tx: TxFrame<Row>) => void): Unsubscribe;
  on(name: "resync", listener: (info: ResyncInfo) => void | Promise<unknown>): Unsubscribe;
  /** Joined (or rejoined). Return a promise to hold the events that follow until it settles. */
  on(name: "joined", listener: (info: JoinInfo) => void | Promise<unknown>): Unsubscribe;
  on(name: "status", listener: (status: RoomStatus) => void): Unsubscribe;
  /** An event arrived out of order (never expected from the server): the room rejoins from `lastSeq`. */
  on(name: "gap", listener: (info: GapInfo) => void): Unsubscribe;
  /** Each `presence_state` and `presence_diff`, with the presence after applying it and the frame itself. */
  on<State = Record<string, unknown>>(name: "presence", listener: (presence: Presence<State>, frame: PresenceFrame) => void): Unsubscribe;
  /** A broadcast from someone else in the room (or your own, with `broadcastSelf`). */
  on<Payload = unknown>(name: "broadcast", listener: (frame: BroadcastFrame<Payload>) => void): Unsubscribe;
  on<Payload = unknown>(name: "broadcast", filter: { event?: string | string[] }, listener: (frame: BroadcastFrame<Payload>) => void): Unsubscribe;
  /** Any other frame of this room's project, by its `op` (for ops the server adds, e.g. presence). */
  on<N extends string>(name: N extends RoomEventName ? never : N, listener: (frame: Frame) => void): Unsubscribe;
  on<N extends string>(
    name: N extends RoomEventName ? never : N,
    filter: Record<string, unknown>,
    listener: (frame: Frame) => void,
  ): Unsubscribe;
  off(name: string, listener: (...args: any[]) => unknown): void;

  /** Resolves when the room is (or next becomes) joined; rejects (with `state` and `reason`) if it ends first. */
  joined(): Promise<JoinInfo>;
  /** Leaves the room for good. */
  leave(): Promise<void>;
  /**
   * Be present with `state` (again to change it). Remembered and tracked again after every rejoin; resolves
   * with `tracked` (at the next join, while not joined), rejects with RequestError if the state is refused.
   */
  track(state?: Record<string, unknown>): Promise<TrackedFrame>;
  /** No longer present (the room stays joined); forgets the state. */
  untrack(): Promise<Frame | null>;
  /** Sends to the others in the room if joined and connected; returns whether it was sent. Never queued. */
  broadcast(event: string, payload?: unknown): boolean;
}

export class Client {
  readonly state: ClientState;
  readonly rooms: Room[];

  on(name: "status", listener: (status: ClientStatus) => void): Unsubscribe;
  /** Every frame the server sends, before the client acts on it. */
  on(name: "frame", listener: (frame: Frame) => void): Unsubscribe;
  on(name: "frame", filter: Record<string, unknown>, listener: (frame: Frame) => void): Unsubscribe;
  off(name: string, listener: (...args: any[]) => unknown): void;

  /** Joins a room (a project id, or your app's room key) and stays in it across reconnects (the same Room if already joined). */
  join(project: string | number, options?: JoinOptions): Room;
  /** Sends a frame with a fresh `ref`; resolves with the reply, rejects with RequestError or ConnectionError. */
  request<Reply extends Frame = Frame>(frame: Frame, options?: { timeout?: number }): Promise<Reply>;
  /** Sends a frame as it is if connected; returns whether it was sent. */
  send(frame: Frame | string): boolean;
  /** An application-level ping: resolves with the round trip in ms. */
  ping(options?: { timeout?: number }): Promise<number>;
  /**
   * A fresh token (the same user's) for this connection before its current one expires: resolves with `authed`.
   * With a token getter, the client then renews on its own a little before each `expires_at`.
   */
  auth(token: string): Promise<AuthedFrame>;
  /** Connects now if waiting to reconnect. */
  reconnect(): void;
  /** Leaves every room and closes the socket for good. */
  close(): void;
}

/** Connects to a boardcast feed: `wss://host/ws` (or `https://host`). */
export function connect(url: string | URL, options: ClientOptions): Client;
