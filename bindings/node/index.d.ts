// Types of the codex-as-api package (ESM and CommonJS).

import type { Server as HttpServer, IncomingMessage, ServerResponse } from 'node:http';

/** Settings of a provider, an app or a server. An option left out falls back to its
 * environment variable (CODEX_AS_API_MODEL, CODEX_AS_API_AUTH_PATH, CODEX_HOME,
 * CODEX_AS_API_UPSTREAM_URL, CODEX_AS_API_TOKEN_URL, CODEX_AS_API_API_KEY), then to
 * config.toml in the Codex home, then to the default. */
export interface ProviderOptions {
  /** Default model (e.g. "gpt-5.5"). */
  model?: string;
  /** The ChatGPT credentials file (default $CODEX_HOME/auth.json, as `codex login` writes it). */
  authJsonPath?: string;
  /** The Codex backend root (default https://chatgpt.com/backend-api). */
  baseUrl?: string;
  /** The OAuth token endpoint. */
  tokenUrl?: string;
  /** The Codex home (default ~/.codex). */
  codexHome?: string;
  /** Seconds without a byte from the backend before a call fails (default 300). */
  timeout?: number;
  /** Answer from the built-in Codex backend emulator (no ChatGPT login needed). */
  demo?: boolean;
}

export interface ServerOptions extends ProviderOptions {
  /** The address to bind (default 127.0.0.1). */
  host?: string;
  /** The port (default 0: any free port). */
  port?: number;
  /** The key clients must present (Authorization: Bearer or x-api-key). */
  apiKey?: string;
}

export type CreateAppOptions = Omit<ServerOptions, 'host' | 'port'>;

export type MessageRole = 'system' | 'developer' | 'user' | 'assistant' | 'tool';

export interface ToolCall {
  id: string;
  name: string;
  /** The arguments as the model wrote them (a JSON text). */
  arguments: string;
}

export type MessageContentPart =
  | { type: 'text'; text: string }
  | { type: 'image_url'; image_url: string | { url: string; detail?: string }; detail?: 'auto' | 'low' | 'high' | 'original' };

/** A message: the OpenAI Chat shape, or the original package's (flat tool calls, `images`). */
export interface Message {
  role: MessageRole;
  content: string | MessageContentPart[] | null;
  tool_calls?: Array<ToolCall | { id: string; type: 'function'; function: { name: string; arguments: string } }>;
  tool_call_id?: string;
  name?: string;
  reasoning_content?: string;
  /** Image URLs or data URLs sent with the text. */
  images?: string[];
  structured_content?: MessageContentPart[];
}

/** A function tool: flat, or in the OpenAI shape. */
export type ToolSchema =
  | { name: string; description?: string; parameters: Record<string, unknown>; strict?: boolean }
  | { type: string; function?: Record<string, unknown>; [key: string]: unknown };

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Prompt tokens served from the cache. */
  cached_tokens: number;
  /** Completion tokens spent on reasoning. */
  reasoning_tokens: number;
}

export type FinishReason = 'stop' | 'tool_calls' | 'length' | 'content_filter' | null;

export interface AssistantResponse {
  content: string;
  finish_reason: FinishReason;
  tool_calls: ToolCall[];
  usage: Usage | null;
  reasoning_content: string | null;
  response_id: string | null;
}

/** Options of `chat` and `chatStream`, by their original (camelCase) or wire (snake_case) names. */
export interface ChatOptions {
  model?: string;
  tools?: ToolSchema[];
  toolChoice?: string | Record<string, unknown>;
  tool_choice?: string | Record<string, unknown>;
  reasoningEffort?: string;
  reasoning_effort?: string;
  reasoning?: { effort?: string; [key: string]: unknown };
  promptCacheKey?: string;
  prompt_cache_key?: string;
  previousResponseId?: string;
  previous_response_id?: string;
  serviceTier?: string;
  service_tier?: string;
  text?: Record<string, unknown>;
  subagent?: string;
  memgenRequest?: boolean;
  memgen_request?: boolean;
  parallelToolCalls?: boolean;
  parallel_tool_calls?: boolean;
  temperature?: number;
  maxTokens?: number;
  max_tokens?: number;
  stop?: string | string[];
  /** Cancels the call and its request upstream: `chat` rejects and `chatStream` throws an AbortError. */
  signal?: AbortSignal;
}

export type StreamEvent =
  | { type: 'content'; text: string }
  | { type: 'reasoning_delta'; text: string }
  | ({ type: 'tool_call'; tool_call: ToolCall } & ToolCall)
  | {
      type: 'finish';
      finish_reason: FinishReason;
      usage: Usage | null;
      reasoning_content: string | null;
      response_id: string | null;
    };

export interface GeneratedImage {
  /** The image, base64-encoded. */
  result: string;
  revised_prompt?: string;
}

export type ImageReference = string | { image_url: string; detail?: string };

export declare class ChatGPTOAuthProvider {
  readonly name: 'chatgpt_oauth';
  /** The default model. */
  readonly model: string;
  constructor(opts?: ProviderOptions);
  chat(messages: Message[], opts?: ChatOptions): Promise<AssistantResponse>;
  chatStream(messages: Message[], opts?: ChatOptions): AsyncGenerator<StreamEvent, void, undefined>;
  generateImage(
    prompt: string,
    opts?: { size?: string; quality?: string; background?: string; n?: number; model?: string; outputFormat?: string },
  ): Promise<GeneratedImage[]>;
  inspectImages(
    prompt: string,
    opts: { images: ImageReference[]; model?: string; reasoningEffort?: string },
  ): Promise<string>;
  /** The compacted history: "[Remote Responses compacted history]\n" + the items as JSON. */
  compactMessages(messages: Message[], opts?: Omit<ChatOptions, 'signal' | 'tools' | 'toolChoice' | 'tool_choice'>): Promise<string>;
  getModelCatalog(): Promise<{ object: 'list'; data: Array<Record<string, unknown>> }>;
  usage(): Promise<Record<string, unknown>>;
  /** A raw Responses API request (non-streaming) → the response object. */
  responses(request: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** A raw Anthropic Messages request (non-streaming) → the message object. */
  messages(request: Record<string, unknown>): Promise<Record<string, unknown>>;
}

export interface CoreServer {
  host: string;
  port: number;
  url: string;
  /** Stop accepting, let in-flight requests finish, then resolve. */
  close(): Promise<void>;
}

/** Serve every endpoint in this process (default 127.0.0.1 and a free port). */
export declare function startServer(opts?: ServerOptions): Promise<CoreServer>;

/** An Express app (express.Express) serving every endpoint of codex-as-api. */
export interface App {
  (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void;
  listen(port?: number, hostname?: string, callback?: () => void): HttpServer;
  listen(port?: number, callback?: () => void): HttpServer;
  use(...handlers: unknown[]): App;
  get(path: string, ...handlers: unknown[]): App;
  post(path: string, ...handlers: unknown[]): App;
  /** The core server the app forwards to. */
  coreServer(): Promise<CoreServer>;
  [key: string]: unknown;
}

/** An Express app serving /v1/chat/completions, /v1/responses, /v1/messages, /v1/models,
 * /health, … (streams included). Its own routes run first; the rest goes to the core. */
export declare function createApp(opts?: CreateAppOptions): App;

/** Run the codex-as-api command line in this process (blocks) → its exit status. */
export declare function runCli(args?: string[]): number;

/** The version of the native core. */
export declare const version: string;

export type ErrorKind =
  | 'bad_request'
  | 'context_length_exceeded'
  | 'unauthorized'
  | 'auth_unavailable'
  | 'refresh_failed'
  | 'forbidden'
  | 'not_found'
  | 'model_not_found'
  | 'payload_too_large'
  | 'request_timeout'
  | 'headers_too_large'
  | 'usage_limit'
  | 'rate_limited'
  | 'quota_exceeded'
  | 'overloaded'
  | 'upstream_server'
  | 'bad_gateway'
  | 'timeout'
  | 'not_implemented'
  | 'internal';

/** Every failure of a call. */
export declare class ChatGPTOAuthError extends Error {
  /** What went wrong. */
  readonly kind: ErrorKind;
  /** The HTTP status it maps to (e.g. 429 for a usage limit). */
  readonly status: number;
  /** The OpenAI error type and code. */
  readonly type: string | null;
  readonly code: string | null;
  readonly param: string | null;
  /** Seconds to wait before trying again, when known. */
  readonly retryAfter: number | null;
}
export declare class ChatGPTOAuthInvalidRequestError extends ChatGPTOAuthError {}
export declare class ChatGPTOAuthMissingError extends ChatGPTOAuthError {}
export declare class ChatGPTOAuthRefreshError extends ChatGPTOAuthError {}
export declare class ChatGPTOAuthModelNotFoundError extends ChatGPTOAuthError {
  readonly model: string | null;
}
export declare class ChatGPTOAuthUpstreamError extends ChatGPTOAuthError {}
export declare class ChatGPTOAuthUnavailableError extends ChatGPTOAuthUpstreamError {}
export declare class ChatGPTOAuthProtocolError extends ChatGPTOAuthError {}

declare const _default: {
  ChatGPTOAuthProvider: typeof ChatGPTOAuthProvider;
  createApp: typeof createApp;
  startServer: typeof startServer;
  runCli: typeof runCli;
  version: string;
  ChatGPTOAuthError: typeof ChatGPTOAuthError;
  ChatGPTOAuthInvalidRequestError: typeof ChatGPTOAuthInvalidRequestError;
  ChatGPTOAuthMissingError: typeof ChatGPTOAuthMissingError;
  ChatGPTOAuthRefreshError: typeof ChatGPTOAuthRefreshError;
  ChatGPTOAuthModelNotFoundError: typeof ChatGPTOAuthModelNotFoundError;
  ChatGPTOAuthUpstreamError: typeof ChatGPTOAuthUpstreamError;
  ChatGPTOAuthUnavailableError: typeof ChatGPTOAuthUnavailableError;
  ChatGPTOAuthProtocolError: typeof ChatGPTOAuthProtocolError;
};
export default _default;
