// examples/dashboard in headless Chromium: the page gets the server's
// /metrics summary as SYNC replies (INIT timer -> store -> dashboard/watch),
// its numbers follow the open pages and the demo load, its charts grow, and
// it re-subscribes when a stream ends. Saves examples/dashboard/screenshot.png.
// Run by examples/run-test.sh.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { launchBrowser, repoRoot, startExample } from '../testing/harness.mjs';

const screenshotPath = path.join(repoRoot, 'examples/dashboard/screenshot.png');
const T = 25_000; // per test
const W = 8_000; // per wait: a summary comes every second

let server, browser, page;

before(async () => {
  server = await startExample('dashboard');
  browser = await launchBrowser({ width: 1280, height: 860 });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** window.dashboard of the page (counters, last summary, points). */
const dash = (p = page) => p.evaluate(() => ({ ...window.dashboard, points: window.dashboard.points.length }));

/** Wait until the card `id` shows a value for which `ok(value)` holds. */
async function waitValue(id, ok, description, timeout = W) {
  try {
    await page.waitForFunction(([i, src]) => {
      const v = document.getElementById(i).dataset.value;
      return v !== undefined && new Function('v', `return (${src})(v)`)(Number(v));
    }, [id, ok.toString()], { timeout });
  } catch (e) {
    const got = await page.$eval(`#${id}`, (n) => n.dataset.value);
    throw new Error(`#${id}: wanted ${description}, got ${got} (${e.message})`);
  }
}

/** data-points of the chart path `sel`, or 0. */
const pointsOf = (sel) => page.$eval(sel, (p) => Number(p.dataset.points)).catch(() => 0);

test('the page gets summaries as SYNC replies and shows one connection', { timeout: T }, async () => {
  page = await browser.newPage();
  const res = await page.goto(server.http + '/');
  assert.equal(res.status(), 200);
  await page.waitForSelector('#status[data-state="open"]', { timeout: W });
  await page.waitForFunction(() => window.dashboard.syncs >= 2, null, { timeout: W });
  await waitValue('connections', (v) => v === 1, '1 connection');
  const d = await dash();
  assert.ok(d.summaries >= 2 && d.syncs >= d.summaries, `every summary came as a SYNC reply: ${JSON.stringify(d)}`);
  assert.equal(d.last.connections, 1);
  assert.equal(typeof d.last.memory_mb, 'number');
  assert.ok(d.last.memory_mb > 0);
  for (const id of ['chart-connections', 'chart-mps', 'chart-plugs']) {
    assert.ok(await page.$(`#${id} line.grid`), `${id} is drawn`);
  }
});

test('the connections count follows the pages that are open', { timeout: T }, async () => {
  const other = await browser.newPage();
  await other.goto(server.http + '/');
  await other.waitForSelector('#status[data-state="open"]', { timeout: W });
  await waitValue('connections', (v) => v === 2, '2 connections');
  await other.close();
  await waitValue('connections', (v) => v === 1, '1 connection after closing the other page');
});

test('load: messages per second and the demo plug\'s run time appear', { timeout: T }, async () => {
  await page.bringToFront();
  const before = await pointsOf('#chart-mps path[data-series="messages"]');
  await page.click('#load');
  assert.equal(await page.getAttribute('#load', 'aria-pressed'), 'true');
  await waitValue('mps', (v) => v >= 5, 'at least 5 messages per second');
  await waitValue('rps', (v) => v > 0, 'replies per second');
  await page.waitForFunction(() => ['work', 'ping'].every((p) => Number(document.querySelector(`#plugs-table tr[data-plug="${p}"]`)?.dataset.calls) > 0), null, { timeout: W });
  await page.waitForSelector('#chart-plugs path[data-series="work"]', { timeout: W });
  await page.waitForFunction(() => Number(document.querySelector('#chart-plugs path[data-series="work"]').dataset.points) >= 2, null, { timeout: W });
  const work = (await dash()).last.plugs.work;
  assert.ok(work.calls > 0 && work.messages > 0 && work.avg_us > 0, JSON.stringify(work));
  assert.notEqual(await page.$eval('#plugs-table tr[data-plug="work"] td:nth-child(3)', (td) => td.textContent), '', 'an average run time');
  assert.ok(await pointsOf('#chart-mps path[data-series="messages"]') > before, 'the messages chart grew');
  await page.click('#burst');
  await waitValue('mps', (v) => v >= 100, 'the burst of 200 pings');
});

test('the charts grow and the page re-subscribes when a stream ends', { timeout: T }, async () => {
  const start = await dash();
  const before = await pointsOf('#chart-connections path[data-series="connections"]');
  // dashboard/watch ends after 8.5 s; the page runs it again and the new
  // invocation's SYNC replies keep coming (each diffs against its request).
  await page.waitForFunction((n) => window.dashboard.streams > n, start.streams, { timeout: 12_000 });
  const syncsAtEnd = (await dash()).syncs;
  await page.waitForFunction((n) => window.dashboard.syncs >= n + 2, syncsAtEnd, { timeout: W });
  assert.ok(await pointsOf('#chart-connections path[data-series="connections"]') > before, 'the connections chart grew');
  const d = await dash();
  assert.ok(d.points > start.points, `more points: ${start.points} -> ${d.points}`);
  assert.equal(await page.$eval('#error', (e) => e.textContent), '', 'no error shown (a failed SYNC patch would show here)');
});

test('screenshot', { timeout: T }, async () => {
  // A second page, so the connections chart has a step in it.
  const other = await browser.newPage();
  await other.goto(server.http + '/');
  await waitValue('connections', (v) => v === 2, '2 connections');
  await page.bringToFront();
  await page.waitForFunction(() => window.dashboard.points.length >= 3, null, { timeout: W });
  await page.screenshot({ path: screenshotPath });
  assert.ok(existsSync(screenshotPath));
  await page.click('#load'); // stop
  assert.deepEqual(browser.pageErrors, [], 'no uncaught errors in the pages');
});
