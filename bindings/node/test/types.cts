// Compiled (not run) by test.sh: the published types for a CommonJS consumer.
import lib = require('codex-as-api');

const provider = new lib.ChatGPTOAuthProvider({ demo: true });
export async function main(): Promise<string> {
  const a = await provider.chat([{ role: 'user', content: 'hi' }]);
  // @ts-expect-error: finish_reason is not a number
  const n: number = a.finish_reason;
  console.log(n, lib.version);
  return a.content;
}
