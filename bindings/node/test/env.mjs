// What test.sh hands the tests: the emulator it started with the installed launcher, and
// the installed package's directory (the tests run from a copy inside it).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';

function need(name) {
  const v = process.env[name];
  assert.ok(v, `${name} is not set: run the tests through bindings/node/test.sh`);
  return v;
}

export const upstreamUrl = need('CODEX_AS_API_TEST_UPSTREAM_URL');
export const tokenUrl = need('CODEX_AS_API_TEST_TOKEN_URL');
export const authJsonPath = need('CODEX_AS_API_TEST_AUTH');
export const codexHome = need('CODEX_HOME');
/** The directory the packages were installed into. */
export const installDir = need('CODEX_AS_API_TEST_INSTALL_DIR');
/** A directory where only the main package was installed (no platform package). */
export const bareDir = need('CODEX_AS_API_TEST_BARE_DIR');
export const launcher = path.join(installDir, 'node_modules', '.bin', 'codex-as-api');

export const options = { authJsonPath, baseUrl: upstreamUrl, tokenUrl, codexHome };

export const WEATHER = [
  {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
];

export function user(text) {
  return [{ role: 'user', content: text }];
}

/** Run a command to its end → {code, signal, stdout, stderr}. */
export function run(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { timeout: 60_000, killSignal: 'SIGKILL', ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Resolve with the first match of `re` in a stream's text (reject if it ends first). */
export function waitFor(stream, re) {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (d) => {
      text += d;
      const m = text.match(re);
      if (m) {
        stream.off('data', onData);
        resolve(m);
      }
    };
    stream.on('data', onData);
    stream.on('end', () => reject(new Error(`stream ended without ${re}:\n${text}`)));
  });
}
