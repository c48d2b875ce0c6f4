// Compiled (not run) by test.sh with `tsc --strict --module nodenext`: the published types
// for an ES module consumer. `@ts-expect-error` lines fail the check if the types were `any`.
import {
  ChatGPTOAuthError,
  ChatGPTOAuthProvider,
  ChatGPTOAuthUpstreamError,
  createApp,
  startServer,
  type AssistantResponse,
  type StreamEvent,
} from 'codex-as-api';

const provider = new ChatGPTOAuthProvider({ model: 'gpt-5.5', authJsonPath: '/tmp/auth.json', timeout: 60 });

export async function main(): Promise<void> {
  const answer: AssistantResponse = await provider.chat([{ role: 'user', content: 'hi' }], {
    tools: [{ name: 'get_weather', parameters: { type: 'object' } }],
    tool_choice: 'auto',
    reasoningEffort: 'low',
    signal: new AbortController().signal,
  });
  const text: string = answer.content;
  const total: number | undefined = answer.usage?.total_tokens;
  for (const call of answer.tool_calls) console.log(call.id, call.name, call.arguments);
  for await (const ev of provider.chatStream([{ role: 'user', content: 'hi' }])) {
    const e: StreamEvent = ev;
    if (e.type === 'content') console.log(e.text);
    else if (e.type === 'tool_call') console.log(e.tool_call.name, e.arguments);
    else if (e.type === 'finish') console.log(e.finish_reason, e.response_id, e.usage?.cached_tokens);
  }
  const images = await provider.generateImage('a red square');
  const b64: string = images[0].result;
  const seen: string = await provider.inspectImages('what is this?', { images: [`data:image/png;base64,${b64}`] });
  const compacted: string = await provider.compactMessages([{ role: 'user', content: 'hi' }]);
  const app = createApp({ apiKey: 'k' });
  app.use((_req: unknown, _res: unknown, next: () => void) => next());
  const http = app.listen(0);
  http.close();
  const core = await startServer({ port: 0 });
  await core.close();
  try {
    await provider.chat([{ role: 'user', content: 'EMU:429' }]);
  } catch (e) {
    if (e instanceof ChatGPTOAuthUpstreamError) {
      const status: number = e.status;
      const retry: number | null = e.retryAfter;
      console.log(status, retry, e.kind === 'usage_limit');
    } else if (e instanceof ChatGPTOAuthError) {
      console.log(e.kind);
    }
  }
  console.log(text, total, seen, compacted);
  // @ts-expect-error: messages are required
  await provider.chat();
  // @ts-expect-error: an unknown role
  await provider.chat([{ role: 'robot', content: 'hi' }]);
  // @ts-expect-error: content is a string
  const n: number = answer.content;
  console.log(n);
}
