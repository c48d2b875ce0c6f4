// createApp(): an Express app serving every endpoint, streams unbuffered, composable.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import express from 'express';
import { createApp } from 'codex-as-api';
import { options } from './env.mjs';

const servers = [];

async function listen(app) {
  const server = app.listen(0);
  await once(server, 'listening');
  servers.push(server);
  return `http://127.0.0.1:${server.address().port}`;
}

let base;
let seen = 0;

before(async () => {
  const app = createApp(options);
  app.use((req, res, next) => {
    seen += 1;
    next();
  });
  app.get('/custom', (req, res) => res.json({ mine: true }));
  base = await listen(app);
});

after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
});

function chat(text, extra = {}) {
  return {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-5.5', messages: [{ role: 'user', content: text }], ...extra }),
  };
}

test('createApp().listen(0) answers /health', async () => {
  const r = await fetch(`${base}/health`);
  assert.equal(r.status, 200);
  assert.equal((await r.json()).status, 'ok');
});

test('a chat completion goes through the app', async () => {
  const r = await fetch(`${base}/v1/chat/completions`, chat('hello'));
  assert.equal(r.status, 200);
  const v = await r.json();
  assert.equal(v.object, 'chat.completion');
  assert.ok(v.choices[0].message.content.length > 0);
});

test('a streamed chat arrives as SSE, piece by piece, not buffered', async () => {
  const started = Date.now();
  const r = await fetch(`${base}/v1/chat/completions`, chat('EMU:deltas:5 EMU:pace:250', { stream: true }));
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  const decoder = new TextDecoder();
  let text = '';
  let firstContentAt = null;
  for await (const chunk of r.body) {
    text += decoder.decode(chunk, { stream: true });
    if (firstContentAt === null && /"content":"[^"]/.test(text)) firstContentAt = Date.now();
  }
  const endedAt = Date.now();
  const events = text
    .split('\n')
    .filter((l) => l.startsWith('data: '))
    .map((l) => l.slice(6));
  assert.equal(events.at(-1), '[DONE]');
  const pieces = events
    .slice(0, -1)
    .map((e) => JSON.parse(e))
    .filter((c) => c.choices?.[0]?.delta?.content);
  assert.equal(pieces.length, 5, text);
  // The pieces come 250 ms apart: the first must reach the client long before the end.
  assert.ok(firstContentAt !== null);
  assert.ok(endedAt - firstContentAt >= 700, `first piece ${firstContentAt - started} ms, end ${endedAt - started} ms`);
});

test('errors keep their status and body through the app', async () => {
  const r = await fetch(`${base}/v1/chat/completions`, chat('EMU:429'));
  assert.equal(r.status, 429);
  const v = await r.json();
  assert.equal(typeof v.error.message, 'string');
});

test('the Anthropic Messages endpoint answers through the app', async () => {
  const r = await fetch(`${base}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] }),
  });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).type, 'message');
});

test("app.use composes: the app's own routes and middleware run first", async () => {
  const before = seen;
  const r = await fetch(`${base}/custom`);
  assert.deepEqual(await r.json(), { mine: true });
  await fetch(`${base}/health`);
  assert.equal(seen, before + 2);
});

test('the app mounts under a path of another app, after a body parser', async () => {
  const outer = express();
  outer.use(express.json());
  outer.use('/api', createApp(options));
  const url = await listen(outer);
  assert.equal((await (await fetch(`${url}/api/health`)).json()).status, 'ok');
  const r = await fetch(`${url}/api/v1/chat/completions`, chat('hello'));
  assert.equal(r.status, 200);
  assert.equal((await r.json()).object, 'chat.completion');
});

test('an API key guards the app', async () => {
  const url = await listen(createApp({ ...options, apiKey: 'sk-test-key' }));
  assert.equal((await fetch(`${url}/v1/chat/completions`, chat('hello'))).status, 401);
  const ok = chat('hello');
  ok.headers.authorization = 'Bearer sk-test-key';
  assert.equal((await fetch(`${url}/v1/chat/completions`, ok)).status, 200);
});
