// A connection that outlives its token: with a token getter, the client hands the server a fresh one before the
// one the server named (in `authed`) expires, so the socket is never closed for an expired token.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { client, setup, sleep, until } from "./harness.js";

const SECRET = "a shared HS256 secret of at least thirty-two bytes";

let jti = 0;
/** An HS256 JWT for a user of the app's own, expiring `secs` from now. */
function jwt(secs) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "app-user-1", exp: Math.floor(Date.now() / 1000) + secs, jti: String(++jti) })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

describe("auth renewal", () => {
  let s;
  before(async () => {
    s = await setup({ env: { BOARDCAST_JWT_SECRET: SECRET, BOARDCAST_JWT_LEEWAY_SECS: "0" } });
  });
  after(async () => {
    await s.done();
  });

  test("with a token getter, the client sends auth again before each expires_at: the socket outlives its tokens", async () => {
    const c = client(s.server.ws, { token: () => jwt(4) });
    const authed = [];
    const statuses = [];
    c.on("frame", (f) => f.op === "authed" && authed.push(f));
    c.on("status", (x) => statuses.push(x.state));
    try {
      await until(() => c.state === "connected", "the connection");
      const first = await c.auth(jwt(4));
      assert.equal(typeof first.expires_at, "string");
      // Past the first token's expiry and the next one's too: every renewal was answered, the socket stayed.
      await until(() => authed.length >= 3, "two renewals by the client");
      assert.ok(Date.parse(authed.at(-1).expires_at) > Date.parse(first.expires_at));
      await sleep(500);
      await c.ping();
      assert.deepEqual(statuses, ["connecting", "connected"]);
    } finally {
      c.close();
    }
  });
});
