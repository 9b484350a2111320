// examples/chat in headless Chromium: pages set nicknames, join a room,
// chat, see each other online; a later page gets the history; a closed
// page is announced and leaves the online list. Saves
// examples/chat/screenshot.png. Run by examples/run-test.sh.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { launchBrowser, repoRoot, startExample } from '../testing/harness.mjs';

const screenshotPath = path.join(repoRoot, 'examples/chat/screenshot.png');
const T = 20_000; // per test
const W = 8_000; // per wait

let server, browser;
const pages = {};

before(async () => {
  server = await startExample('chat');
  browser = await launchBrowser({ width: 1100, height: 640 });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

// ---- helpers ----

/** A new page at the chat, connected, with nickname `name` set. */
async function open(name) {
  const page = await browser.newPage();
  const res = await page.goto(server.http + '/');
  assert.equal(res.status(), 200);
  await page.waitForSelector('#status[data-state="open"]', { timeout: W });
  await page.fill('#nick', name);
  await page.click('#nick-set');
  await page.waitForFunction((n) => document.querySelector('#me').textContent === `you are ${n}`, name, { timeout: W });
  return page;
}

async function join(page, room) {
  await page.bringToFront();
  await page.fill('#room-name', room);
  await page.click('#join');
  await page.waitForFunction((r) => document.querySelector('#room-title').textContent === `# ${r}`, room, { timeout: W });
  await page.waitForSelector(`#my-rooms li.current[data-room="${room}"]`, { timeout: W });
}

async function say(page, text) {
  await page.bringToFront();
  await page.fill('#text', text);
  await page.click('#send');
}

/** Wait until the online list shows exactly `names` (sorted). */
async function waitOnline(page, names) {
  const want = [...names].sort();
  await page.waitForFunction(
    (w) => JSON.stringify([...document.querySelectorAll('#online li')].map((li) => li.textContent).sort()) === JSON.stringify(w),
    want, { timeout: W },
  ).catch(async (e) => {
    const got = await page.$$eval('#online li', (lis) => lis.map((li) => li.textContent));
    throw new Error(`online list: wanted ${JSON.stringify(want)}, got ${JSON.stringify(got)} (${e.message})`);
  });
}

/** Wait for a message row from `from` saying `text`. */
const waitMessage = (page, from, text) => page.waitForFunction(
  ([f, t]) => [...document.querySelectorAll('#messages .msg[data-kind="message"]')]
    .some((r) => r.querySelector('.from').textContent === f && r.querySelector('.text').textContent === t),
  [from, text], { timeout: W },
);

/** Wait for a notice row with exactly `text`. */
const waitNotice = (page, text) => page.waitForFunction(
  (t) => [...document.querySelectorAll('#messages .msg[data-kind="notice"] .text')].some((n) => n.textContent === t),
  text, { timeout: W },
);

const messages = (page) => page.$$eval('#messages .msg[data-kind="message"]', (rows) => rows.map((r) => ({
  from: r.querySelector('.from').textContent, text: r.querySelector('.text').textContent, history: r.dataset.history === 'true',
})));

// ---- tests ----

test('two pages set nicknames, join a room and see each other online', { timeout: T }, async () => {
  pages.ada = await open('Ada');
  await join(pages.ada, 'lobby');
  await waitOnline(pages.ada, ['Ada']);
  pages.bob = await open('Bob');
  await join(pages.bob, 'lobby');
  await waitOnline(pages.bob, ['Ada', 'Bob']);
  await waitOnline(pages.ada, ['Ada', 'Bob']);
  await waitNotice(pages.ada, 'Bob joined');
  assert.equal(await pages.ada.textContent('#online li.me'), 'Ada');
});

test('they chat: each sees the other\'s messages', { timeout: T }, async () => {
  await say(pages.ada, 'hello Bob');
  await waitMessage(pages.bob, 'Ada', 'hello Bob');
  await waitMessage(pages.ada, 'Ada', 'hello Bob'); // the sender's own line (the answer to its request)
  await say(pages.bob, 'hi Ada, how are you?');
  await waitMessage(pages.ada, 'Bob', 'hi Ada, how are you?');
  await say(pages.ada, 'fine, thanks');
  await waitMessage(pages.bob, 'Ada', 'fine, thanks');
  const seen = await messages(pages.bob);
  assert.deepEqual(seen.map((m) => `${m.from}: ${m.text}`), ['Ada: hello Bob', 'Bob: hi Ada, how are you?', 'Ada: fine, thanks']);
  assert.equal(await pages.ada.$eval('#text', (i) => i.value), '', 'the input is cleared after sending');
});

test('a page joining later gets the history', { timeout: T }, async () => {
  pages.cy = await open('Cy');
  await join(pages.cy, 'lobby');
  await waitOnline(pages.cy, ['Ada', 'Bob', 'Cy']);
  const history = await messages(pages.cy);
  assert.deepEqual(history.map((m) => `${m.from}: ${m.text}`), ['Ada: hello Bob', 'Bob: hi Ada, how are you?', 'Ada: fine, thanks']);
  assert.ok(history.every((m) => m.history), 'marked as history');
  await waitOnline(pages.ada, ['Ada', 'Bob', 'Cy']);
  await waitNotice(pages.bob, 'Cy joined');
  await say(pages.cy, 'hello all');
  await waitMessage(pages.ada, 'Cy', 'hello all');
  await waitMessage(pages.bob, 'Cy', 'hello all');
});

test('a page that closes is announced and leaves the online list', { timeout: T }, async () => {
  await pages.bob.close();
  await waitNotice(pages.ada, 'Bob left');
  await waitNotice(pages.cy, 'Bob left');
  await waitOnline(pages.ada, ['Ada', 'Cy']);
  await waitOnline(pages.cy, ['Ada', 'Cy']);
});

test('rooms: a second room, the room list, leaving', { timeout: T }, async () => {
  await join(pages.cy, 'random');
  await waitOnline(pages.cy, ['Cy']);
  await say(pages.cy, 'anyone here?');
  // Ada sees "random" in the list of all rooms and joins it from there.
  await pages.ada.bringToFront();
  await pages.ada.click('#refresh-rooms');
  await pages.ada.waitForSelector('#all-rooms li[data-room="random"]', { timeout: W });
  await pages.ada.click('#all-rooms li[data-room="random"]');
  await pages.ada.waitForSelector('#my-rooms li.current[data-room="random"]', { timeout: W });
  await waitOnline(pages.ada, ['Ada', 'Cy']);
  await waitMessage(pages.ada, 'Cy', 'anyone here?');
  // Messages to a room not shown count as unread.
  await pages.ada.click('#my-rooms li[data-room="lobby"]');
  await say(pages.cy, 'still there?');
  await pages.ada.bringToFront();
  await pages.ada.waitForSelector('#my-rooms li[data-room="random"] .unread:text("1")', { timeout: W });
  // Cy leaves "random" with its × button: Ada is told there.
  await pages.cy.click('#my-rooms li[data-room="random"] .leave');
  await pages.cy.waitForSelector('#my-rooms li[data-room="random"]', { state: 'detached', timeout: W });
  await pages.ada.bringToFront();
  await pages.ada.click('#my-rooms li[data-room="random"]');
  await waitNotice(pages.ada, 'Cy left');
  await waitOnline(pages.ada, ['Ada']);
  // A message to a room one is not in is refused, with the server's reason shown.
  const err = await pages.cy.evaluate(async () => {
    const { SsocketClient } = await import('/ssocket.js');
    const c = new SsocketClient(`ws://${location.host}/`);
    await c.ready;
    try { await c.request('say', { room: 'lobby', text: 'psst' }); return null; } catch (e) { return e.code; } finally { c.close(); }
  });
  assert.equal(err, 'not_in_room');
});

test('screenshot', { timeout: T }, async () => {
  await pages.ada.bringToFront();
  await pages.ada.click('#my-rooms li[data-room="lobby"]');
  await say(pages.ada, 'see you later, Cy');
  // Cy's view: the history it got on joining (dimmed, above the divider),
  // then live messages and notices.
  const page = pages.cy;
  await page.bringToFront();
  await waitMessage(page, 'Ada', 'see you later, Cy');
  await page.click('#refresh-rooms');
  await page.waitForSelector('#all-rooms li[data-room="lobby"] .count:text("2 online")', { timeout: W });
  await page.waitForSelector('#all-rooms li[data-room="random"]', { timeout: W });
  assert.equal(await page.textContent('#room-title'), '# lobby');
  await page.fill('#text', 'bye!');
  await page.screenshot({ path: screenshotPath });
  assert.ok(existsSync(screenshotPath));
  assert.deepEqual(browser.pageErrors, [], 'no uncaught errors in the pages');
});
