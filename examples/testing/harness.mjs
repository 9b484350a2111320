// Test support for the examples' browser tests (examples/test/*.test.mjs):
// start the server binary in an example's folder, as its README says to,
// and open headless Chromium. Kept outside test/ so `node --test` does not
// run it as a test file.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from '../../clients/playground/node_modules/playwright-core/index.mjs';
import { repoRoot, startServer } from '../../clients/js/testing/server.mjs';

export { repoRoot };
export const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/**
 * Start the server in `examples/NAME` with its config.toml (as its README
 * says to), on 127.0.0.1 and a free port, plus `args`. Resolves with
 * {url, http, port, log(), stop()} once it listens.
 */
export function startExample(name, args = []) {
  return startServer(['--config', 'config.toml', '--INSECURE.port', '0', ...args],
    { cwd: path.join(repoRoot, 'examples', name), startTimeoutMs: 15_000 });
}

/**
 * Headless Chromium with a fresh profile. Resolves with {context, newPage(),
 * close()}; newPage() records uncaught page errors in `pageErrors`.
 */
export async function launchBrowser({ width = 1200, height = 760 } = {}) {
  if (!existsSync(chromiumPath)) throw new Error(`chromium not found at ${chromiumPath}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
  const profile = mkdtempSync(path.join(tmpdir(), 'ssocket-examples-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
      // Several pages are open at once and only one is in front: keep the
      // others running at full speed (timers, animation frames).
      '--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows'],
    viewport: { width, height },
  });
  const pageErrors = [];
  let blank = context.pages()[0]; // the window the browser opens with
  return {
    context,
    pageErrors,
    async newPage() {
      const page = blank ?? await context.newPage();
      blank = null;
      page.on('pageerror', (e) => pageErrors.push(e));
      return page;
    },
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
