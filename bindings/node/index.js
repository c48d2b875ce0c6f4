'use strict';
// The JavaScript API of codex-as-api over the native addon (the Rust core, in this
// process): ChatGPTOAuthProvider (chat, chatStream, generateImage, inspectImages,
// compactMessages, …), createApp (an Express app serving every endpoint) and startServer.
// Answers keep the snake_case field names of the original package.

const http = require('node:http');
const net = require('node:net');

const addon = require('./native.js').load();

const ERROR_MARKER = 'codex-as-api-error:';
const COMPACTION_MARKER = '[Remote Responses compacted history]';

// ---------------------------------------------------------------------------- errors

/** Every failure of a call: `status` (the HTTP status it maps to) and `kind`. */
class ChatGPTOAuthError extends Error {
  constructor(message, info = {}) {
    super(message);
    this.name = new.target.name;
    this.kind = info.kind ?? 'internal';
    this.status = info.status ?? 500;
    this.type = info.type ?? null;
    this.code = info.code ?? null;
    this.param = info.param ?? null;
    this.retryAfter = info.retry_after ?? null;
  }
}
/** The request is malformed or does not fit (400, 413). */
class ChatGPTOAuthInvalidRequestError extends ChatGPTOAuthError {}
/** No ChatGPT credentials (run `codex-as-api login`). */
class ChatGPTOAuthMissingError extends ChatGPTOAuthError {}
/** The credentials could not be refreshed. */
class ChatGPTOAuthRefreshError extends ChatGPTOAuthError {}
/** The model is unknown. */
class ChatGPTOAuthModelNotFoundError extends ChatGPTOAuthError {
  constructor(message, info = {}) {
    super(message, info);
    this.model = info.model ?? null;
  }
}
/** The backend refused or failed (usage limit, rate limit, 5xx). */
class ChatGPTOAuthUpstreamError extends ChatGPTOAuthError {}
/** The backend is unreachable, overloaded or too slow (502, 503, 504). */
class ChatGPTOAuthUnavailableError extends ChatGPTOAuthUpstreamError {}
/** An answer that breaks the protocol, or a bug. */
class ChatGPTOAuthProtocolError extends ChatGPTOAuthError {}

const ERROR_CLASSES = {
  unauthorized: ChatGPTOAuthMissingError,
  auth_unavailable: ChatGPTOAuthMissingError,
  refresh_failed: ChatGPTOAuthRefreshError,
  bad_request: ChatGPTOAuthInvalidRequestError,
  context_length_exceeded: ChatGPTOAuthInvalidRequestError,
  payload_too_large: ChatGPTOAuthInvalidRequestError,
  headers_too_large: ChatGPTOAuthInvalidRequestError,
  model_not_found: ChatGPTOAuthModelNotFoundError,
  usage_limit: ChatGPTOAuthUpstreamError,
  rate_limited: ChatGPTOAuthUpstreamError,
  quota_exceeded: ChatGPTOAuthUpstreamError,
  forbidden: ChatGPTOAuthUpstreamError,
  upstream_server: ChatGPTOAuthUpstreamError,
  bad_gateway: ChatGPTOAuthUnavailableError,
  overloaded: ChatGPTOAuthUnavailableError,
  timeout: ChatGPTOAuthUnavailableError,
  internal: ChatGPTOAuthProtocolError,
};

/** A native error (its message carries the core's error as JSON) → a ChatGPTOAuthError. */
function convertError(e) {
  const text = e && typeof e.message === 'string' ? e.message : '';
  const at = text.indexOf(ERROR_MARKER);
  if (at < 0) return e;
  let info;
  try {
    info = JSON.parse(text.slice(at + ERROR_MARKER.length));
  } catch {
    return e;
  }
  const Class = ERROR_CLASSES[info.kind] ?? ChatGPTOAuthError;
  return new Class(info.message, info);
}

async function call(fn) {
  try {
    return await fn();
  } catch (e) {
    throw convertError(e);
  }
}

/** `promise`'s value, or null as soon as `signal` aborts. */
function untilAborted(promise, signal) {
  if (!signal) return promise;
  if (signal.aborted) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(null);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function abortError(signal) {
  if (signal.reason instanceof Error) return signal.reason;
  return new DOMException('The operation was aborted.', 'AbortError');
}

// ---------------------------------------------------------------------------- requests

function nativeOptions(opts = {}) {
  const o = {};
  for (const [from, to] of [
    ['model', 'model'],
    ['authJsonPath', 'authJsonPath'],
    ['auth_json_path', 'authJsonPath'],
    ['authPath', 'authJsonPath'],
    ['baseUrl', 'baseUrl'],
    ['base_url', 'baseUrl'],
    ['tokenUrl', 'tokenUrl'],
    ['token_url', 'tokenUrl'],
    ['codexHome', 'codexHome'],
    ['codex_home', 'codexHome'],
    ['timeout', 'timeout'],
    ['demo', 'demo'],
    ['host', 'host'],
    ['port', 'port'],
    ['apiKey', 'apiKey'],
    ['api_key', 'apiKey'],
  ]) {
    if (opts[from] !== undefined && opts[from] !== null) o[to] = opts[from];
  }
  return o;
}

// Each option by its original (camelCase) name and by its wire (snake_case) name.
const CHAT_OPTIONS = [
  ['tools', 'tools'],
  ['toolChoice', 'tool_choice'],
  ['reasoningEffort', 'reasoning_effort'],
  ['reasoning', 'reasoning'],
  ['promptCacheKey', 'prompt_cache_key'],
  ['previousResponseId', 'previous_response_id'],
  ['serviceTier', 'service_tier'],
  ['text', 'text'],
  ['subagent', 'subagent'],
  ['memgenRequest', 'memgen_request'],
  ['parallelToolCalls', 'parallel_tool_calls'],
  ['temperature', 'temperature'],
  ['maxTokens', 'max_tokens'],
  ['stop', 'stop'],
  ['safetyIdentifier', 'safety_identifier'],
  ['metadata', 'metadata'],
  ['responseFormat', 'response_format'],
];

/** A tool as the original package spells it ({name, description, parameters}) or as OpenAI does. */
function tool(t) {
  if (t && typeof t === 'object' && (t.type !== undefined || t.function !== undefined)) return t;
  const fn = { name: t.name, parameters: t.parameters ?? { type: 'object', properties: {} } };
  if (t.description !== undefined) fn.description = t.description;
  if (t.strict !== undefined) fn.strict = t.strict;
  return { type: 'function', function: fn };
}

/** A message of the original package's shape (flat tool calls, `images`) in the OpenAI shape. */
function message(m) {
  if (!m || typeof m !== 'object') return m;
  const out = { ...m };
  if (Array.isArray(m.tool_calls)) {
    out.tool_calls = m.tool_calls.map((c) =>
      c.function !== undefined
        ? c
        : { id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments ?? '{}' } },
    );
  }
  const parts = [];
  if (Array.isArray(m.structured_content)) {
    for (const p of m.structured_content) {
      if (p.type === 'image_url') {
        const url = typeof p.image_url === 'string' ? p.image_url : p.image_url?.url;
        parts.push({ type: 'image_url', image_url: p.detail ? { url, detail: p.detail } : { url } });
      } else {
        parts.push(p);
      }
    }
    delete out.structured_content;
  }
  if (Array.isArray(m.images) && m.images.length) {
    if (!parts.length && typeof m.content === 'string' && m.content) {
      parts.push({ type: 'text', text: m.content });
    }
    for (const url of m.images) parts.push({ type: 'image_url', image_url: { url } });
  }
  delete out.images;
  if (parts.length) out.content = parts;
  return out;
}

function chatRequest(model, messages, opts = {}) {
  if (!Array.isArray(messages)) {
    throw new ChatGPTOAuthInvalidRequestError('`messages` must be an array', {
      kind: 'bad_request',
      status: 400,
      param: 'messages',
    });
  }
  const body = { messages: messages.map(message) };
  const m = opts.model ?? model;
  if (m) body.model = m;
  for (const [camel, snake] of CHAT_OPTIONS) {
    const v = opts[snake] ?? opts[camel];
    if (v !== undefined && v !== null) body[snake] = v;
  }
  if (Array.isArray(body.tools)) body.tools = body.tools.map(tool);
  return body;
}

function assistantResponse(r) {
  return {
    content: r.content,
    finish_reason: r.finish_reason || null,
    tool_calls: r.tool_calls,
    usage: r.usage ?? null,
    reasoning_content: r.reasoning_content ?? null,
    response_id: r.response_id || null,
  };
}

/** A Chat-shaped conversation as a Responses `input` (+ `instructions` from system messages). */
function responsesInput(messages) {
  const instructions = [];
  const input = [];
  const text = (c) =>
    typeof c === 'string'
      ? c
      : Array.isArray(c)
        ? c.map((p) => (typeof p === 'string' ? p : (p.text ?? ''))).join('')
        : '';
  for (const m of messages) {
    if (m.role === 'system') {
      instructions.push(text(m.content));
    } else if (m.role === 'tool') {
      input.push({ type: 'function_call_output', call_id: m.tool_call_id, output: text(m.content) });
    } else {
      const content = text(m.content);
      if (content || m.role !== 'assistant') input.push({ role: m.role, content });
      for (const c of m.tool_calls ?? []) {
        const fn = c.function ?? c;
        input.push({ type: 'function_call', call_id: c.id, name: fn.name, arguments: fn.arguments ?? '{}' });
      }
    }
  }
  return { instructions: instructions.join('\n\n'), input };
}

// ---------------------------------------------------------------------------- provider

/**
 * The ChatGPT subscription as a chat provider, in this process (no server, no socket).
 * Options: model, authJsonPath, baseUrl (the Codex backend root), tokenUrl, codexHome,
 * timeout (seconds without a byte from the backend), demo (the built-in emulator answers).
 */
class ChatGPTOAuthProvider {
  constructor(opts = {}) {
    this.name = 'chatgpt_oauth';
    try {
      this._native = new addon.Provider(nativeOptions(opts));
    } catch (e) {
      throw convertError(e);
    }
  }

  /** The default model. */
  get model() {
    return this._native.model;
  }

  /** `messages` (OpenAI Chat shape) → Promise of {content, finish_reason, tool_calls, usage, reasoning_content, response_id}. */
  async chat(messages, opts = {}) {
    const body = chatRequest(this.model, messages, opts);
    const signal = opts.signal;
    if (signal?.aborted) throw abortError(signal);
    const native = this._native.chat(body);
    // An abort cancels the native call, and with it the request upstream.
    const onAbort = () => native.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return assistantResponse(await call(() => native.result()));
    } catch (e) {
      if (signal?.aborted) throw abortError(signal);
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * `messages` → an async iterator of events: {type: "content", text},
   * {type: "reasoning_delta", text}, {type: "tool_call", id, name, arguments, tool_call},
   * {type: "finish", finish_reason, usage, reasoning_content, response_id}. `opts.signal`
   * (an AbortSignal) cancels the request; the iterator then throws an AbortError. Leaving
   * a `for await` loop early cancels it too.
   */
  async *chatStream(messages, opts = {}) {
    const signal = opts.signal;
    const body = chatRequest(this.model, messages, opts);
    if (signal?.aborted) throw abortError(signal);
    let stream = null;
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      if (stream) stream.close().catch(() => {});
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const opening = call(() => this._native.chatStream(body));
      stream = await untilAborted(opening, signal);
      if (stream === null) {
        // Aborted before the answer began: close the stream if it opens after all.
        opening.then((s) => s.close(), () => {});
        throw abortError(signal);
      }
      let reasoning = '';
      let usage = null;
      for (;;) {
        const ev = await call(() => stream.next());
        if (aborted) throw abortError(signal);
        if (ev === null) {
          throw new ChatGPTOAuthProtocolError('the answer stream ended before its finish event', {
            kind: 'internal',
            status: 502,
          });
        }
        switch (ev.type) {
          case 'text':
            yield { type: 'content', text: ev.text };
            break;
          case 'reasoning':
            reasoning += ev.text;
            yield { type: 'reasoning_delta', text: ev.text };
            break;
          case 'tool_call_end': {
            const tc = { id: ev.call.id, name: ev.call.name, arguments: ev.call.arguments };
            yield { type: 'tool_call', ...tc, tool_call: tc };
            break;
          }
          case 'usage':
            usage = ev.usage;
            break;
          case 'finish':
            yield {
              type: 'finish',
              finish_reason: ev.reason || null,
              usage,
              reasoning_content: reasoning || null,
              response_id: ev.response_id || null,
            };
            return;
          default:
            // tool_call_start / tool_call_delta: the whole call comes with tool_call_end.
            break;
        }
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (stream) await stream.close();
    }
  }

  /** Generate an image → Promise of [{result (base64 PNG), revised_prompt?}]. */
  async generateImage(prompt, opts = {}) {
    const body = { prompt };
    for (const k of ['size', 'quality', 'background', 'n', 'model']) {
      if (opts[k] !== undefined) body[k] = opts[k];
    }
    const outputFormat = opts.outputFormat ?? opts.output_format;
    if (outputFormat !== undefined) body.output_format = outputFormat;
    const r = await call(() => this._native.images(body));
    return (r.data ?? []).map((d) => {
      const image = { result: d.b64_json };
      if (d.revised_prompt) image.revised_prompt = d.revised_prompt;
      return image;
    });
  }

  /** Ask about images (`opts.images`: URLs, data URLs or {image_url}) → Promise of the answer text. */
  async inspectImages(prompt, opts = {}) {
    const images = (opts.images ?? []).map((i) =>
      typeof i === 'string' ? { image_url: i } : { image_url: i.image_url ?? i.url },
    );
    const body = { prompt, images };
    if (opts.model) body.model = opts.model;
    const effort = opts.reasoningEffort ?? opts.reasoning_effort;
    if (effort) body.reasoning_effort = effort;
    const r = await call(() => this._native.inspect(body));
    return r.text;
  }

  /** Compact a conversation → Promise of the compacted history as the original encodes it. */
  async compactMessages(messages, opts = {}) {
    const { instructions, input } = responsesInput(messages);
    const body = { input };
    if (instructions) body.instructions = instructions;
    if (opts.model ?? this.model) body.model = opts.model ?? this.model;
    for (const [camel, snake] of CHAT_OPTIONS) {
      const v = opts[snake] ?? opts[camel];
      if (v !== undefined && v !== null && snake !== 'tools' && snake !== 'tool_choice') body[snake] = v;
    }
    if (body.reasoning_effort) {
      body.reasoning = { effort: body.reasoning_effort };
      delete body.reasoning_effort;
    }
    const r = await call(() => this._native.compact(body));
    return `${COMPACTION_MARKER}\n${JSON.stringify(r.output ?? [])}`;
  }

  /** The model catalog ({object: "list", data}). */
  async getModelCatalog() {
    return call(() => this._native.models());
  }

  /** The account's rate-limit windows, plan and credits. */
  async usage() {
    return call(() => this._native.usage());
  }

  /** A raw Responses API request (non-streaming) → the response object. */
  async responses(request) {
    return call(() => this._native.responses(request));
  }

  /** A raw Anthropic Messages request (non-streaming) → the message object. */
  async messages(request) {
    return call(() => this._native.messages(request));
  }
}

// ---------------------------------------------------------------------------- server

/** Serve every endpoint on host:port (default 127.0.0.1 and a free port) → {host, port, close()}. */
async function startServer(opts = {}) {
  const server = await call(() => addon.startServer(nativeOptions(opts)));
  return {
    host: server.host,
    port: server.port,
    url: `http://${server.host.includes(':') ? `[${server.host}]` : server.host}:${server.port}`,
    close: () => server.close(),
  };
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
]);

function forwardHeaders(headers) {
  const out = {};
  for (const [k, v] of Object.entries(headers)) {
    if (!HOP_BY_HOP.has(k)) out[k] = v;
  }
  return out;
}

/** The body a parser middleware (express.json(), …) already consumed, to send again. */
function consumedBody(req) {
  if (!req.readableEnded || req.body === undefined) return null;
  if (Buffer.isBuffer(req.body)) return req.body;
  if (typeof req.body === 'string') return Buffer.from(req.body);
  return Buffer.from(JSON.stringify(req.body));
}

/**
 * An Express app serving every endpoint of codex-as-api (/v1/chat/completions,
 * /v1/responses, /v1/messages, /v1/models, /health, …; streams included). Requests no
 * route of the app answers go, unbuffered both ways, to the core server running in this
 * process on 127.0.0.1. Routes and middleware added with `app.use`/`app.get` run first.
 * Options: those of ChatGPTOAuthProvider, plus apiKey (then requests must present it,
 * from any host name); `app.listen(port)` works, and closing that server stops the core.
 */
function createApp(opts = {}) {
  const express = require('express');
  const app = express();
  const agent = new http.Agent({ keepAlive: true });
  const keyed = Boolean(opts.apiKey ?? opts.api_key ?? process.env.CODEX_AS_API_API_KEY);
  let core = null;
  const started = () => {
    core ??= startServer({ ...opts, host: '127.0.0.1', port: 0 });
    return core;
  };
  // Start now: the first request does not wait for it; a failure surfaces there.
  started().catch(() => {});

  const forward = (req, res, next) => {
    started().then((server) => {
      const headers = forwardHeaders(req.headers);
      // Without a key, the Host header goes as it came: the core refuses foreign names on
      // a loopback bind (DNS rebinding). With a key, any name may reach it.
      if (keyed || !headers.host) headers.host = `127.0.0.1:${server.port}`;
      const replay = consumedBody(req);
      if (replay) headers['content-length'] = String(replay.length);
      const up = http.request(
        { host: '127.0.0.1', port: server.port, method: req.method, path: req.url, headers, agent },
        (upRes) => {
          upRes.on('error', () => res.destroy());
          upRes.on('aborted', () => res.destroy());
          res.writeHead(upRes.statusCode, forwardHeaders(upRes.headers));
          res.flushHeaders();
          upRes.pipe(res);
        },
      );
      up.setNoDelay(true);
      up.on('error', (err) => {
        if (!res.headersSent) next(err);
        else res.destroy(err);
      });
      // The client went away before the answer ended: so does the request to the core,
      // which then cancels it upstream.
      res.on('close', () => {
        if (!res.writableFinished) up.destroy();
      });
      if (replay) up.end(replay);
      else req.pipe(up);
    }, next);
  };

  // Whatever the app's own routes leave unanswered goes to the core.
  const handle = app.handle;
  app.handle = function codexAsApiHandle(req, res, done) {
    return handle.call(this, req, res, (err) => {
      if (err) {
        if (done) return done(err);
        res.statusCode = err.status ?? err.statusCode ?? 500;
        return res.end(res.statusCode >= 500 ? 'Internal Server Error' : String(err.message));
      }
      forward(req, res, (e) => {
        if (done) return done(e);
        res.statusCode = 502;
        res.end(`codex-as-api: ${e && e.message}`);
      });
    });
  };

  // WebSocket upgrades (the Responses API over a socket) go to the core as raw bytes.
  const listen = app.listen;
  app.listen = function codexAsApiListen(...args) {
    const server = listen.apply(this, args);
    server.on('upgrade', (req, socket, head) => {
      started().then(
        (core) => {
          const up = net.connect(core.port, '127.0.0.1', () => {
            const lines = [`${req.method} ${req.url} HTTP/1.1`];
            for (let i = 0; i < req.rawHeaders.length; i += 2) {
              const k = req.rawHeaders[i];
              const v = keyed && k.toLowerCase() === 'host' ? `127.0.0.1:${core.port}` : req.rawHeaders[i + 1];
              lines.push(`${k}: ${v}`);
            }
            up.write(`${lines.join('\r\n')}\r\n\r\n`);
            if (head?.length) up.write(head);
            up.pipe(socket);
            socket.pipe(up);
          });
          up.on('error', () => socket.destroy());
          socket.on('error', () => up.destroy());
        },
        () => socket.destroy(),
      );
    });
    server.on('close', () => {
      agent.destroy();
      if (core) core.then((s) => s.close(), () => {});
    });
    return server;
  };

  /** The core server ({host, port, url, close()}), started with the app. */
  app.coreServer = started;
  return app;
}

/** Run the codex-as-api command line in this process (argv without the program name) → its exit status. */
function runCli(args = []) {
  return addon.runCli(['codex-as-api', ...args]);
}

module.exports = {
  ChatGPTOAuthProvider,
  createApp,
  startServer,
  runCli,
  version: addon.version(),
  ChatGPTOAuthError,
  ChatGPTOAuthInvalidRequestError,
  ChatGPTOAuthMissingError,
  ChatGPTOAuthRefreshError,
  ChatGPTOAuthModelNotFoundError,
  ChatGPTOAuthUpstreamError,
  ChatGPTOAuthUnavailableError,
  ChatGPTOAuthProtocolError,
};
module.exports.default = module.exports;
