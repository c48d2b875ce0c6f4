// The CommonJS entry: require('codex-as-api') gives the same API as the ES module.
const assert = require('node:assert/strict');
const { test } = require('node:test');

test('require("codex-as-api") exports the API and chats', async () => {
  const lib = require('codex-as-api');
  const { ChatGPTOAuthProvider, createApp, ChatGPTOAuthError, ChatGPTOAuthUpstreamError } = lib;
  assert.equal(typeof createApp, 'function');
  assert.equal(lib.default, lib);
  assert.ok(ChatGPTOAuthUpstreamError.prototype instanceof ChatGPTOAuthError);
  assert.match(lib.version, /^\d+\.\d+\.\d+/);
  const env = await import('./env.mjs');
  const p = new ChatGPTOAuthProvider(env.options);
  const a = await p.chat(env.user('hello'));
  assert.equal(a.finish_reason, 'stop');
});

test('the ES module and CommonJS entries share one set of classes', async () => {
  const esm = await import('codex-as-api');
  const cjs = require('codex-as-api');
  assert.equal(esm.ChatGPTOAuthProvider, cjs.ChatGPTOAuthProvider);
  assert.equal(esm.ChatGPTOAuthError, cjs.ChatGPTOAuthError);
  assert.equal(esm.default, cjs);
});
