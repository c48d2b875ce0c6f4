// ChatGPTOAuthProvider (ESM import) against the emulator that test.sh started.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ChatGPTOAuthError,
  ChatGPTOAuthInvalidRequestError,
  ChatGPTOAuthMissingError,
  ChatGPTOAuthProvider,
  ChatGPTOAuthRefreshError,
  ChatGPTOAuthUpstreamError,
} from 'codex-as-api';
import { readFileSync, writeFileSync } from 'node:fs';
import { WEATHER, authJsonPath, codexHome, options, user } from './env.mjs';

const provider = new ChatGPTOAuthProvider({ ...options, model: 'gpt-5.5' });

async function collect(iterable) {
  const events = [];
  for await (const ev of iterable) events.push(ev);
  return events;
}

test('chat resolves to the whole answer with snake_case fields', async () => {
  const a = await provider.chat(user('hello there'));
  assert.deepEqual(Object.keys(a).sort(), [
    'content',
    'finish_reason',
    'reasoning_content',
    'response_id',
    'tool_calls',
    'usage',
  ]);
  assert.ok(a.content.length > 0);
  assert.equal(a.finish_reason, 'stop');
  assert.deepEqual(a.tool_calls, []);
  assert.match(a.response_id, /^chatcmpl-/);
  assert.ok(a.usage.prompt_tokens > 0);
  assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + a.usage.completion_tokens);
  assert.equal(provider.model, 'gpt-5.5');
});

test('chat returns tool calls for tools in the original flat shape', async () => {
  const a = await provider.chat(user('EMU:tool'), { tools: WEATHER, tool_choice: 'auto' });
  assert.equal(a.finish_reason, 'tool_calls');
  assert.equal(a.tool_calls.length, 1);
  const [call] = a.tool_calls;
  assert.equal(call.name, 'get_weather');
  assert.match(call.id, /^call_/);
  assert.equal(JSON.parse(call.arguments).city, 'test');
});

test('a tool result goes back as a message and the conversation continues', async () => {
  const first = await provider.chat(user('EMU:tool'), { tools: WEATHER });
  const [call] = first.tool_calls;
  const messages = [
    ...user('EMU:tool'),
    { role: 'assistant', content: '', tool_calls: [call] },
    { role: 'tool', tool_call_id: call.id, content: 'sunny, 22C' },
  ];
  const a = await provider.chat(messages, { tools: WEATHER, reasoningEffort: 'low' });
  assert.ok(['stop', 'tool_calls'].includes(a.finish_reason), a.finish_reason);
});

test('chatStream yields the text in pieces, then finish with usage and id', async () => {
  const events = await collect(provider.chatStream(user('EMU:deltas:5')));
  const pieces = events.filter((e) => e.type === 'content');
  assert.equal(pieces.length, 5, JSON.stringify(events));
  for (const p of pieces) assert.equal(typeof p.text, 'string');
  const finish = events.at(-1);
  assert.equal(finish.type, 'finish');
  assert.equal(finish.finish_reason, 'stop');
  assert.match(finish.response_id, /^chatcmpl-/);
  assert.ok(finish.usage.total_tokens > 0);
  assert.equal(events.filter((e) => e.type === 'finish').length, 1);
});

test('chatStream yields a whole tool call, then finish with tool_calls', async () => {
  const events = await collect(provider.chatStream(user('EMU:tool'), { tools: WEATHER }));
  const calls = events.filter((e) => e.type === 'tool_call');
  assert.equal(calls.length, 1, JSON.stringify(events));
  const [c] = calls;
  assert.equal(c.name, 'get_weather');
  assert.deepEqual(c.tool_call, { id: c.id, name: c.name, arguments: c.arguments });
  assert.equal(JSON.parse(c.arguments).city, 'test');
  const finish = events.at(-1);
  assert.equal(finish.type, 'finish');
  assert.equal(finish.finish_reason, 'tool_calls');
});

test('an AbortSignal stops a stream mid-answer with an AbortError', async () => {
  const ac = new AbortController();
  const pieces = [];
  const started = Date.now();
  await assert.rejects(
    async () => {
      for await (const ev of provider.chatStream(user('EMU:deltas:40 EMU:pace:200'), { signal: ac.signal })) {
        if (ev.type === 'content') {
          pieces.push(ev.text);
          if (pieces.length === 2) ac.abort();
        }
      }
    },
    (e) => e.name === 'AbortError',
  );
  assert.equal(pieces.length, 2);
  // 40 pieces 200 ms apart take 8 s; the abort ends it at once.
  assert.ok(Date.now() - started < 4000, `took ${Date.now() - started} ms`);
  // The provider is still usable afterwards.
  assert.ok((await provider.chat(user('hello'))).content.length > 0);
});

test('an already aborted signal rejects before any request', async () => {
  const signal = AbortSignal.abort();
  await assert.rejects(collect(provider.chatStream(user('hello'), { signal })), { name: 'AbortError' });
  await assert.rejects(provider.chat(user('hello'), { signal }), { name: 'AbortError' });
});

test('an aborted chat cancels its request: the account\'s streams are free at once', async () => {
  // A fresh provider admits 3 open streams per account at first. Four 20-second answers,
  // aborted: if their requests ran on, the next call would wait ~20 s for a place.
  const fresh = new ChatGPTOAuthProvider({ ...options, model: 'gpt-5.5' });
  const ac = new AbortController();
  const calls = [0, 1, 2, 3].map((i) =>
    fresh.chat(user(`EMU:deltas:40 EMU:pace:500 call ${i}`), { signal: ac.signal }),
  );
  ac.abort();
  // Every call's rejection is handled at once (they settle in any order).
  await Promise.all(calls.map((c) => assert.rejects(c, { name: 'AbortError' })));
  const started = Date.now();
  const a = await fresh.chat(user('after the aborts'));
  assert.equal(a.content, 'You said: after the aborts');
  assert.ok(Date.now() - started < 4000, `the next call took ${Date.now() - started} ms`);
});

test('leaving a for-await loop early ends the stream', async () => {
  let n = 0;
  for await (const ev of provider.chatStream(user('EMU:deltas:40 EMU:pace:200'))) {
    if (ev.type === 'content' && ++n === 1) break;
  }
  assert.equal(n, 1);
});

test('generateImage returns base64 PNG images', async () => {
  const images = await provider.generateImage('a red square', { size: '1024x1024' });
  assert.equal(images.length, 1);
  const png = Buffer.from(images[0].result, 'base64');
  assert.deepEqual([...png.subarray(1, 4)], [...Buffer.from('PNG')]);
});

test('inspectImages answers about an image, compactMessages returns the compacted history', async () => {
  const [image] = await provider.generateImage('a blue circle');
  const text = await provider.inspectImages('What is in this picture?', {
    images: [`data:image/png;base64,${image.result}`],
  });
  assert.equal(typeof text, 'string');
  assert.ok(text.length > 0);
  const compacted = await provider.compactMessages([
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'hello' },
    { role: 'assistant', content: 'Hi! How can I help?' },
    { role: 'user', content: 'Summarize our chat.' },
  ]);
  const [marker, json] = compacted.split('\n');
  assert.equal(marker, '[Remote Responses compacted history]');
  const items = JSON.parse(json);
  assert.ok(Array.isArray(items) && items.length > 0, compacted);
});

test('the model catalog lists models', async () => {
  const catalog = await provider.getModelCatalog();
  assert.equal(catalog.object, 'list');
  assert.ok(catalog.data.length > 0);
});

test('a usage limit is an upstream error with status 429, kind and retryAfter', async () => {
  const check = (e) => {
    assert.ok(e instanceof ChatGPTOAuthUpstreamError, String(e));
    assert.ok(e instanceof ChatGPTOAuthError);
    assert.equal(e.status, 429);
    assert.equal(e.kind, 'usage_limit');
    assert.ok(e.retryAfter > 0, String(e.retryAfter));
    assert.ok(e.message.length > 0);
    return true;
  };
  await assert.rejects(provider.chat(user('EMU:429')), check);
  await assert.rejects(collect(provider.chatStream(user('EMU:429'))), check);
});

test('an invalid request is a 400 invalid request error', async () => {
  await assert.rejects(provider.chat('not a list'), (e) => {
    assert.ok(e instanceof ChatGPTOAuthInvalidRequestError);
    assert.equal(e.status, 400);
    return true;
  });
  await assert.rejects(provider.chat([]), (e) => {
    assert.ok(e instanceof ChatGPTOAuthInvalidRequestError, String(e));
    assert.equal(e.kind, 'bad_request');
    assert.match(e.message, /messages/);
    return true;
  });
  assert.throws(() => new ChatGPTOAuthProvider({ ...options, timeout: -1 }), ChatGPTOAuthInvalidRequestError);
});

test('missing credentials are a missing-credentials error with status 401', async () => {
  const p = new ChatGPTOAuthProvider({ ...options, authJsonPath: `${codexHome}/no-such-auth.json` });
  await assert.rejects(p.chat(user('hello')), (e) => {
    assert.ok(e instanceof ChatGPTOAuthMissingError, `${e.name}: ${e.message}`);
    assert.equal(e.status, 401);
    assert.equal(e.kind, 'auth_unavailable');
    return true;
  });
});

test('a refresh the token endpoint refuses is a refresh error with status 401', async () => {
  const part = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const doc = JSON.parse(readFileSync(authJsonPath, 'utf8'));
  doc.tokens.access_token = `${part({ alg: 'none' })}.${part({ exp: 1 })}.sig`;
  doc.tokens.refresh_token = 'rt_never_issued';
  const path = `${codexHome}/refused-auth.json`;
  writeFileSync(path, JSON.stringify(doc));
  const p = new ChatGPTOAuthProvider({ ...options, authJsonPath: path });
  await assert.rejects(p.chat(user('hello')), (e) => {
    assert.ok(e instanceof ChatGPTOAuthRefreshError, `${e.name}: ${e.message}`);
    assert.ok(!(e instanceof ChatGPTOAuthMissingError));
    assert.equal(e.kind, 'refresh_failed');
    assert.equal(e.status, 401);
    return true;
  });
});

test('demo mode answers without a login', async () => {
  const p = new ChatGPTOAuthProvider({ demo: true, codexHome });
  const a = await p.chat(user('hello'));
  assert.ok(a.content.length > 0);
  assert.equal(a.finish_reason, 'stop');
});
