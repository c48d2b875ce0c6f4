// The installed launcher: the command line in-process, signals, and the message it prints
// when the platform package is missing.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { authJsonPath, bareDir, codexHome, installDir, launcher, run, tokenUrl, upstreamUrl, waitFor } from './env.mjs';

test('npx codex-as-api --version prints the version', async () => {
  const r = await run('npx', ['--no-install', 'codex-as-api', '--version'], { cwd: installDir });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^codex-as-api \d+\.\d+\.\d+/);
});

test('a usage error exits 2 with the message on stderr', async () => {
  const r = await run(launcher, ['--no-such-flag'], { cwd: installDir });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--no-such-flag/);
});

/** Start `serve`, wait for its address, check /health, send `signal` → {code, sig, port}. */
async function serveAndSignal(signal) {
  const child = spawn(launcher, ['serve', '--port', '0'], {
    cwd: installDir,
    // A server that ignores the signal is killed, and the test fails instead of hanging.
    timeout: 30_000,
    killSignal: 'SIGKILL',
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {
      ...process.env,
      CODEX_AS_API_UPSTREAM_URL: upstreamUrl,
      CODEX_AS_API_TOKEN_URL: tokenUrl,
      CODEX_AS_API_AUTH_PATH: authJsonPath,
      CODEX_HOME: codexHome,
      NO_COLOR: '1',
    },
  });
  const exited = once(child, 'exit');
  try {
    const [, port] = await waitFor(child.stderr, /listening on http:\/\/127\.0\.0\.1:(\d+)/);
    const health = await fetch(`http://127.0.0.1:${port}/health`);
    assert.equal((await health.json()).status, 'ok');
    child.kill(signal);
    const [code, sig] = await exited;
    return { code, sig, port };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  test(`${signal} stops the server gracefully`, { timeout: 120_000 }, async () => {
    // The server logs its address a moment before it installs its signal handlers; a
    // signal in between has its default action (the process dies of it): start again.
    let r;
    for (let attempt = 0; attempt < 3; attempt++) {
      r = await serveAndSignal(signal);
      if (r.sig !== signal) break;
    }
    assert.equal(r.sig, null, `killed by ${r.sig} instead of shutting down`);
    assert.equal(r.code, 0);
    await assert.rejects(fetch(`http://127.0.0.1:${r.port}/health`));
  });
}

test('without the platform package, the launcher names the missing package', async () => {
  const id = `${process.platform}-${process.arch}-gnu`;
  const r = await run('npx', ['--no-install', 'codex-as-api', '--version'], { cwd: bareDir });
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stderr, new RegExp(`the package @codex-as-api/${id} is missing`));
  assert.match(r.stderr, new RegExp(`this platform \\(${id}\\)`));
  const lib = await run(process.execPath, ['-e', 'require("codex-as-api")'], { cwd: bareDir });
  assert.notEqual(lib.code, 0);
  assert.match(lib.stderr, new RegExp(`@codex-as-api/${id} is missing`));
});
