// Test support for the examples' browser tests (examples/test/*.test.mjs):
// start the server binary in an example's folder, as its README says to,
// and open headless Chromium. Kept outside test/ so `node --test` does not
// run it as a test file.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from '../../clients/playground/node_modules/playwright-core/index.mjs';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The server under test: $TEST_SERVER_BIN (absolute, or relative to where node runs), else the release build. */
export const binary = path.resolve(process.env.TEST_SERVER_BIN || path.join(repoRoot, 'target/release/ssocket'));
export const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

// The server reads every SSOCKET_* variable as a configuration key: start it
// without any from the caller's environment.
const serverEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SSOCKET_')));

/**
 * Start the server in `examples/NAME` with its config.toml, on 127.0.0.1 and
 * a free port, plus `args`. Resolves with {url, http, port, log(), stop()}
 * once it logs "listening on ws://ADDR/".
 */
export function startExample(name, args = []) {
  if (!existsSync(binary)) throw new Error(`server binary not found at ${binary}: run \`cargo build --release\` in ${repoRoot} (or set TEST_SERVER_BIN)`);
  const cwd = path.join(repoRoot, 'examples', name);
  const child = spawn(binary, ['--config', 'config.toml', '--INSECURE.hostname', '127.0.0.1', '--INSECURE.port', '0', ...args],
    { cwd, env: serverEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  // Never leave a server behind, even when the test process dies early.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  child.once('exit', () => process.off('exit', killOnExit));
  let log = '';
  return new Promise((resolve, reject) => {
    const fail = (err) => { clearTimeout(timer); child.kill('SIGKILL'); reject(err); };
    const timer = setTimeout(() => fail(new Error(`server did not start within 15 s; log:\n${log}`)), 15_000);
    const exited = (code, signal) => fail(new Error(`server exited (code ${code}, signal ${signal}) before listening; log:\n${log}`));
    child.once('error', fail);
    child.once('exit', exited);
    child.stderr.setEncoding('utf8');
    let listening = false;
    child.stderr.on('data', (chunk) => {
      log = (log + chunk).slice(-50_000); // keep the tail only
      const m = !listening && /listening on ws:\/\/(\S+?)\//.exec(log);
      if (!m) return;
      listening = true;
      clearTimeout(timer);
      child.off('exit', exited);
      resolve({
        url: `ws://${m[1]}/`,
        http: `http://${m[1]}`,
        port: Number(m[1].split(':').pop()),
        log: () => log,
        // SIGTERM lets running plugs finish (shutdownTimeoutMs); SIGKILL if
        // it takes longer than that.
        stop: () => new Promise((done) => {
          if (child.exitCode !== null || child.signalCode !== null) return done();
          const kill = setTimeout(() => child.kill('SIGKILL'), 8000);
          child.once('exit', () => { clearTimeout(kill); done(); });
          child.kill('SIGTERM');
        }),
      });
    });
  });
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
