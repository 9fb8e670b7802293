// The same client in headless Chromium (Debian's `chromium`, driven by playwright-core; no browser is
// downloaded): a page on another origin imports /client.js from the server, so what is tested is the module as
// the server serves it, loaded cross-origin, over the browser's own WebSocket. Set CHROMIUM to another binary.

import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";

import { TcpProxy, latestSeq, psql, recorded, setup } from "./harness.js";

const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

describe("in Chromium", () => {
  let s;
  let proxy;
  let page;
  let browser;
  let context;
  let site;
  const pages = {};

  before(async () => {
    if (!fs.existsSync(executablePath)) {
      throw new Error(`no Chromium at ${executablePath}: apt-get install -y chromium (or set CHROMIUM)`);
    }
    s = await setup();
    proxy = await new TcpProxy(s.server.port).start();
    // The app's own origin: a blank page, like any web app that imports the client from its boardcast server.
    site = http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(pages[req.url] ?? "<!doctype html><title>app</title>");
    });
    await new Promise((r) => site.listen(0, "127.0.0.1", r));
    // No sandbox (CI runs as root); and none of Chromium's own background traffic, which a closed network refuses.
    const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"];
    browser = await chromium.launch({ executablePath, args });
    context = await browser.newContext();
    page = await context.newPage();
    page.on("pageerror", (e) => console.error("page error:", e));
    await page.goto(`http://127.0.0.1:${site.address().port}/`);
  });

  after(async () => {
    await browser?.close();
    site?.close();
    await proxy?.close();
    await s?.done();
  });

  // Starts a client in the page, on the proxy's address, joined to the project; the page keeps what it got.
  async function start(options = {}) {
    const moduleUrl = `${s.server.http}/client.js`;
    return page.evaluate(
      async ({ moduleUrl, ws, token, project, options }) => {
        const { connect } = await import(moduleUrl);
        const client = connect(ws, { token, ...options });
        const got = { events: [], statuses: [], joins: [] };
        client.on("status", (x) => got.statuses.push(x));
        const room = client.join(project);
        room.on("event", (e) => got.events.push(e));
        room.on("joined", (i) => got.joins.push(i));
        window.bc = { client, room, got };
        const info = await room.joined();
        return { seq: info.seq, hasWebSocket: typeof WebSocket === "function" };
      },
      { moduleUrl, ws: proxy.ws, token: s.token, project: s.project, options },
    );
  }

  const got = () => page.evaluate(() => window.bc.got);
  const stop = () => page.evaluate(() => window.bc.client.close());
  const write = (title) => s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${s.project}', '${title}')`);

  async function deliveredExactly(from) {
    const latest = await latestSeq(s.db, s.project);
    await page.waitForFunction((latest) => window.bc.room.lastSeq === latest && window.bc.room.state === "joined", latest, {
      timeout: 30000,
    });
    const want = await recorded(s.db, s.project, from);
    assert.deepEqual((await got()).events, want);
  }

  test("joins over the browser's WebSocket and receives events", async () => {
    const { seq, hasWebSocket } = await start();
    assert.equal(hasWebSocket, true);
    await write("a");
    await write("b");
    await deliveredExactly(seq);
    await stop();
  });

  test("a cut socket: reconnects and catches up, nothing missed", async () => {
    const { seq } = await start();
    await write("before");
    proxy.sever();
    for (let i = 0; i < 20; i++) await write(`during-${i}`);
    await page.waitForFunction(() => window.bc.got.joins.length === 2, null, { timeout: 30000 });
    await write("after");
    await deliveredExactly(seq);
    const statuses = (await got()).statuses.map((x) => x.state);
    assert.ok(statuses.includes("disconnected"), statuses.join());
    await stop();
  });

  test("offline: no reconnect attempts until the browser is back online, then catch-up", async () => {
    const { seq } = await start();
    await context.setOffline(true);
    proxy.sever();
    await page.waitForFunction(() => window.bc.got.statuses.some((x) => x.reason === "offline"), null, { timeout: 30000 });
    for (let i = 0; i < 20; i++) await write(`offline-${i}`);
    const attempts = (await got()).statuses.filter((x) => x.state === "connecting").length;
    assert.equal(attempts, 1, "no attempt while offline");
    await context.setOffline(false);
    await deliveredExactly(seq);
    await stop();
  });

  test("the README's web-app example, as written: the board loads, then follows the feed", async () => {
    const readme = fs.readFileSync(new URL("../../../README.md", import.meta.url), "utf8");
    const example = readme.split("### From a web app")[1].split("```html\n")[1].split("```")[0];
    const html = example
      .replaceAll("http://127.0.0.1:8080", s.server.http)
      .replace('"bc_…"', JSON.stringify(s.token))
      .replace('"6f1c…"', JSON.stringify(s.project));
    assert.notEqual(html, example);
    await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${s.project}', 'there before')`);
    const board = await context.newPage();
    board.on("pageerror", (e) => console.error("page error:", e));
    board.on("console", (m) => console.error("page console:", m.text()));
    pages["/board.html"] = html;
    await board.goto(`http://127.0.0.1:${site.address().port}/board.html`);
    const items = () => board.locator("#board li").allTextContents();
    await board.waitForFunction(() => [...document.querySelectorAll("#board li")].some((li) => li.textContent === "there before"));
    await s.sql(`INSERT INTO tasks (project_id, title) VALUES ('${s.project}', 'live <b>one</b>')`);
    await board.waitForFunction(() => [...document.querySelectorAll("#board li")].some((li) => li.textContent === "live <b>one</b>"));
    await s.sql(`DELETE FROM tasks WHERE project_id = '${s.project}' AND title = 'there before'`);
    await board.waitForFunction(() => ![...document.querySelectorAll("#board li")].some((li) => li.textContent === "there before"));
    const titles = await psql(s.db, `SELECT title FROM tasks WHERE project_id = '${s.project}' ORDER BY position, created_at, id`);
    assert.deepEqual(await items(), titles.split("\n"));
    await board.close();
  });

  test("a tab becoming visible skips the rest of the backoff", async () => {
    const { seq } = await start({ backoffMin: 600000, backoffMax: 600000 });
    proxy.sever();
    await page.waitForFunction(() => window.bc.client.state === "disconnected", null, { timeout: 30000 });
    await write("while hidden");
    await page.evaluate(() => document.dispatchEvent(new Event("visibilitychange")));
    await deliveredExactly(seq);
    await stop();
  });
});
