// Test support shared by the JS client's, the playground's and the example
// apps' tests: start the real server binary and wait until it listens. (Kept outside test/ so
// `node --test` does not run it as a test file.)
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** The server under test: $TEST_SERVER_BIN (absolute, or relative to where node runs), else the release build. */
export const binary = path.resolve(process.env.TEST_SERVER_BIN || path.join(repoRoot, 'target/release/ssocket'));

// The server reads every SSOCKET_* variable as a configuration key: start it
// without any from the caller's environment.
const serverEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SSOCKET_')));

/**
 * Start the server on 127.0.0.1 with extra `args`, in `cwd` (default: the
 * repository); resolves with {url, http, port, log(), stop(signal)} once it
 * logs "listening on ws://ADDR/". stop() waits for the exit, and sends
 * SIGKILL if a graceful stop takes over 8 s (past shutdownTimeoutMs).
 */
export function startServer(args, { cwd = repoRoot, startTimeoutMs = 10_000 } = {}) {
  if (!existsSync(binary)) throw new Error(`server binary not found at ${binary}: run \`cargo build --release\` in ${repoRoot} (or set TEST_SERVER_BIN)`);
  const child = spawn(binary, ['--INSECURE.hostname', '127.0.0.1', ...args], { cwd, env: serverEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  // Never leave a server behind, even when the test process dies early.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  child.once('exit', () => process.off('exit', killOnExit));
  let log = '';
  return new Promise((resolve, reject) => {
    const fail = (err) => { clearTimeout(timer); child.kill('SIGKILL'); reject(err); };
    const timer = setTimeout(() => fail(new Error(`server did not start within ${startTimeoutMs / 1000} s; log:\n${log}`)), startTimeoutMs);
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
        stop: (signal = 'SIGTERM') => new Promise((done) => {
          if (child.exitCode !== null || child.signalCode !== null) return done();
          const kill = setTimeout(() => child.kill('SIGKILL'), 8000);
          child.once('exit', () => { clearTimeout(kill); done(); });
          child.kill(signal);
        }),
      });
    });
  });
}
