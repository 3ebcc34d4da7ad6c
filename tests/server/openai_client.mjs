// openai_client.mjs - the official `openai` npm package against `kiln serve`:
// chat with and without streaming, completions with and without streaming,
// embeddings as floats and as base64 (the SDK's default), and an unknown
// model as a NotFoundError. Answers must equal what `kiln chat` / `kiln run`
// / `kiln embed` printed for the same input at temperature 0 (the shell
// test writes them to EXPECTED.json).
// Usage: node openai_client.mjs NPM_PREFIX BASE_URL API_KEY EXPECTED.json
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";

const [prefix, baseURL, apiKey, expectedFile] = process.argv.slice(2);
const require = createRequire(path.join(prefix, "package.json"));
const OpenAI = require("openai");
const want = JSON.parse(readFileSync(expectedFile, "utf8"));
const client = new OpenAI({ baseURL: baseURL + "/v1", apiKey, maxRetries: 0, timeout: 60000 });

let failures = 0;
function check(what, ok, detail) {
  if (!ok) {
    failures++;
    console.log(`FAIL: ${what}: ${detail}`);
  }
}

const chatArgs = {
  model: "llama",
  messages: [{ role: "user", content: want.chat_prompt }],
  max_tokens: want.n,
  temperature: 0,
};

// chat, one response
const chat = await client.chat.completions.create(chatArgs);
check("chat content", chat.choices[0].message.content === want.chat,
  `${JSON.stringify(chat.choices[0].message.content)} != ${JSON.stringify(want.chat)}`);
check("chat usage", chat.usage.completion_tokens > 0 &&
  chat.usage.total_tokens === chat.usage.prompt_tokens + chat.usage.completion_tokens,
  JSON.stringify(chat.usage));

// chat, streamed, with usage
let text = "", usage = null, finish = null;
const stream = await client.chat.completions.create({ ...chatArgs, stream: true,
  stream_options: { include_usage: true } });
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    text += c.delta.content ?? "";
    if (c.finish_reason) finish = c.finish_reason;
  }
}
check("chat stream content", text === want.chat, `${JSON.stringify(text)} != ${JSON.stringify(want.chat)}`);
check("chat stream finish_reason", finish === "stop" || finish === "length", finish);
check("chat stream usage", usage && usage.completion_tokens === chat.usage.completion_tokens,
  JSON.stringify(usage));

// completions, one response and streamed
const compArgs = { model: "llama", prompt: want.completion_prompt, max_tokens: want.n, temperature: 0 };
const comp = await client.completions.create(compArgs);
check("completion text", comp.choices[0].text === want.completion,
  `${JSON.stringify(comp.choices[0].text)} != ${JSON.stringify(want.completion)}`);
text = "";
for await (const chunk of await client.completions.create({ ...compArgs, stream: true }))
  for (const c of chunk.choices) text += c.text;
check("completion stream text", text === want.completion,
  `${JSON.stringify(text)} != ${JSON.stringify(want.completion)}`);

// embeddings: floats, then the SDK's default (base64, decoded by the SDK)
function closeTo(got, ref) {
  if (got.length !== ref.length) return `length ${got.length} != ${ref.length}`;
  let worst = 0;
  for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(got[i] - ref[i]));
  return worst <= 1e-6 ? null : `max difference ${worst}`;
}
for (const format of ["float", undefined]) {
  const args = { model: "emb", input: want.embed_inputs };
  if (format) args.encoding_format = format;
  const emb = await client.embeddings.create(args);
  const label = `embeddings (${format ?? "SDK default: base64"})`;
  check(`${label} count`, emb.data.length === want.embeddings.length, emb.data.length);
  emb.data.forEach((d, i) => {
    const why = closeTo(d.embedding, want.embeddings[i]);
    check(`${label} vector ${i}`, why === null, why);
  });
  check(`${label} usage`, emb.usage.prompt_tokens > 0, JSON.stringify(emb.usage));
}

// an unknown model is the SDK's NotFoundError
try {
  await client.chat.completions.create({ ...chatArgs, model: "no-such-model" });
  check("unknown model", false, "no error");
} catch (e) {
  check("unknown model", e instanceof OpenAI.NotFoundError && e.status === 404,
    `${e.constructor.name} ${e.status} ${e.message}`);
}

if (failures) process.exit(1);
console.log("openai client: all checks passed");
