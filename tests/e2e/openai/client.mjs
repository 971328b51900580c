// client.mjs: the official OpenAI Node client against a llmesh node.
// usage: node client.mjs BASE_URL MODEL_ID PROMPT EXPECTED_FILE
// EXPECTED_FILE holds what `llmesh run --temp 0 -n 32` printed for PROMPT.
// With LLMESH_TEST_API_KEY set, the client sends that key (the node requires
// it), and a client with a wrong key must get an AuthenticationError (401).
// Prints one line per check and "N passed, N failed"; exits 1 on failure.
import fs from 'node:fs';
import OpenAI from 'openai';
import { check, finish } from './checks.mjs';

const [baseURL, model, prompt, expectedFile] = process.argv.slice(2);
const expected = fs.readFileSync(expectedFile, 'utf8');
const apiKey = process.env.LLMESH_TEST_API_KEY;
const client = new OpenAI({ baseURL, apiKey: apiKey || 'unused', maxRetries: 0, timeout: 60000 });

await check('models.list names the model', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  return ids.includes(model);
});

await check('completions.create, greedy, equals llmesh run', async () => {
  const r = await client.completions.create({ model, prompt, max_tokens: 32, temperature: 0 });
  if (r.choices[0].text !== expected) console.log(`  got ${JSON.stringify(r.choices[0].text)}`);
  return r.choices[0].text === expected && r.usage.completion_tokens === 32;
});

await check('streamed completion equals llmesh run, one chunk per token', async () => {
  const stream = await client.completions.create({ model, prompt, max_tokens: 32, temperature: 0, stream: true });
  let text = '', chunks = 0;
  for await (const chunk of stream) {
    const piece = chunk.choices[0]?.text ?? '';
    text += piece;
    if (piece !== '') chunks++;
  }
  if (text !== expected || chunks !== 32) console.log(`  got ${JSON.stringify(text)} in ${chunks} chunks with text`);
  return text === expected && chunks === 32;
});

await check('streamed chat completion carries deltas and a finish reason', async () => {
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Who is my shepherd?' }], max_tokens: 8, temperature: 0, stream: true,
  });
  let text = '', finish = null, role = null;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    if (!c) continue;
    role = role ?? c.delta?.role ?? null;
    text += c.delta?.content ?? '';
    finish = c.finish_reason ?? finish;
  }
  return role === 'assistant' && text.length > 0 && (finish === 'length' || finish === 'stop');
});

await check('chat completion with logprobs', async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Say something.' }], max_tokens: 4, temperature: 0,
    logprobs: true, top_logprobs: 2,
  });
  const lp = r.choices[0].logprobs?.content ?? [];
  return lp.length > 0 && lp.every((t) => t.logprob <= 0 && t.top_logprobs.length === 2);
});

await check('an unknown model is a NotFoundError (404)', async () => {
  try {
    await client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 1 });
    return false;
  } catch (e) {
    return e instanceof OpenAI.NotFoundError && e.status === 404;
  }
});

await check('a bad field is a BadRequestError (400)', async () => {
  try {
    await client.completions.create({ model, prompt: 'x', max_tokens: 1, temperature: 7 });
    return false;
  } catch (e) {
    return e instanceof OpenAI.BadRequestError && e.status === 400 && /temperature/.test(e.message);
  }
});

if (apiKey) {
  await check('a wrong API key is an AuthenticationError (401, invalid_api_key)', async () => {
    const wrong = new OpenAI({ baseURL, apiKey: `${apiKey}x`, maxRetries: 0, timeout: 60000 });
    try {
      await wrong.completions.create({ model, prompt: 'x', max_tokens: 1 });
      return false;
    } catch (e) {
      return e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key';
    }
  });
}

finish();
