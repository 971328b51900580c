// agents.mjs: the official OpenAI Node client against llmesh's agent features:
// tool calls (forced by name and 'required', plain and streamed, on models with
// the real Qwen2.5, Llama 3.2 and Mistral v0.3 templates and random weights),
// the next turn with the call and its result in the history, json_schema
// output on the demo model, several choices (n), embeddings, and the 400s for a model without tool support and
// an unknown field. Random weights: only what is deterministic is asserted (a
// forced call parses and fits its schema; the JSON answer validates).
// usage: node agents.mjs BASE_URL DEMO_MODEL TOOL_MODEL...
// Prints one line per check and "N passed, N failed"; exits 1 on failure.
import OpenAI from 'openai';
import { check, finish } from './checks.mjs';

const [baseURL, demo, ...toolModels] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 120000 });

const tools = [
  { type: 'function', function: { name: 'get_weather', description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 12 },
      unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'], additionalProperties: false } } },
  { type: 'function', function: { name: 'get_time',
    parameters: { type: 'object', properties: { zone: { type: 'string', maxLength: 8 } }, additionalProperties: false } } },
];
const messages = [{ role: 'system', content: 'Use the tools.' }, { role: 'user', content: 'Weather in Paris?' }];

function weatherArgsOk(text) {
  const a = JSON.parse(text);
  return typeof a.city === 'string' && [...a.city].length <= 12 && ['celsius', 'fahrenheit'].includes(a.unit)
    && Object.keys(a).length === 2;
}
function callOk(call) {
  if (call.type !== 'function' || !/^[A-Za-z0-9]{9}$/.test(call.id)) return false;
  if (call.function.name === 'get_weather') return weatherArgsOk(call.function.arguments);
  if (call.function.name !== 'get_time') return false;
  const a = JSON.parse(call.function.arguments);
  return typeof a === 'object' && !Array.isArray(a) && Object.keys(a).every((k) => k === 'zone');
}

for (const model of toolModels) {
  let first = null;
  await check(`${model}: a call forced by name parses and fits the schema`, async () => {
    const r = await client.chat.completions.create({ model, messages, tools, max_tokens: 400, seed: 1,
      tool_choice: { type: 'function', function: { name: 'get_weather' } } });
    const c = r.choices[0];
    first = c.message;
    return c.finish_reason === 'tool_calls' && c.message.content === null && c.message.tool_calls.length === 1
      && c.message.tool_calls[0].function.name === 'get_weather' && callOk(c.message.tool_calls[0]);
  });
  await check(`${model}: 'required', streamed: deltas assemble into one valid call`, async () => {
    const stream = await client.chat.completions.create({ model, messages, tools, max_tokens: 400, seed: 2,
      tool_choice: 'required', stream: true });
    const calls = [];
    let finish = null, fragments = 0;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c) continue;
      for (const d of c.delta?.tool_calls ?? []) {
        calls[d.index] ??= { id: '', type: '', function: { name: '', arguments: '' } };
        const t = calls[d.index];
        if (d.id) t.id = d.id;
        if (d.type) t.type = d.type;
        if (d.function?.name) t.function.name += d.function.name;
        if (d.function?.arguments) { t.function.arguments += d.function.arguments; fragments++; }
      }
      finish = c.finish_reason ?? finish;
    }
    const ok = finish === 'tool_calls' && calls.length === 1 && callOk(calls[0])
      && fragments >= 1 && (calls[0].function.arguments.length <= 32 || fragments >= 2); // fragments of <= 32 bytes
    if (!ok) console.log(`  got ${finish} ${JSON.stringify(calls)} in ${fragments} fragments`);
    return ok;
  });
  await check(`${model}: the client's stream helper assembles the streamed call`, async () => {
    const runner = client.beta.chat.completions.stream({ model, messages, tools, max_tokens: 400, seed: 3,
      tool_choice: { type: 'function', function: { name: 'get_weather' } } });
    const done = await runner.finalChatCompletion();
    const m = done.choices[0].message;
    return m.tool_calls?.length === 1 && callOk(m.tool_calls[0]);
  });
  await check(`${model}: the next turn renders the call and its result`, async () => {
    if (!first) return false;
    const r = await client.chat.completions.create({ model, tools, max_tokens: 8, seed: 4, messages: [
      ...messages, first, { role: 'tool', tool_call_id: first.tool_calls[0].id, content: '18 degrees' }] });
    return ['stop', 'length', 'tool_calls'].includes(r.choices[0].finish_reason);
  });
}

await check('json_schema: the answer parses and validates (several seeds)', async () => {
  for (let seed = 1; seed <= 3; seed++) {
    const r = await client.chat.completions.create({ model: demo, max_tokens: 300, seed,
      messages: [{ role: 'user', content: 'Name a king of Israel.' }],
      response_format: { type: 'json_schema', json_schema: { name: 'king', strict: true, schema: {
        type: 'object', properties: { king: { type: 'string', maxLength: 16 }, year: { type: 'integer' },
          tribe: { enum: ['Judah', 'Benjamin', 'Ephraim'] } },
        required: ['king', 'year', 'tribe'], additionalProperties: false } } } });
    const o = JSON.parse(r.choices[0].message.content);
    if (!(typeof o.king === 'string' && Number.isInteger(o.year) && ['Judah', 'Benjamin', 'Ephraim'].includes(o.tribe)
      && r.choices[0].finish_reason === 'stop')) return false;
  }
  return true;
});

await check('n: three completions, each its own index and sampling stream, different texts', async () => {
  const r = await client.completions.create({ model: demo, prompt: 'And God said', max_tokens: 12, seed: 9, n: 3 });
  const single = await client.completions.create({ model: demo, prompt: 'And God said', max_tokens: 12, seed: 11 });
  const texts = new Set(r.choices.map((c) => c.text));
  return r.choices.length === 3 && r.choices.every((c, i) => c.index === i) && texts.size > 1
    && r.choices[2].text === single.choices[0].text; // choice i samples with seed + i
});

await check('n greedy: every choice is the single answer; the prompt evaluated once (usage, timings)', async () => {
  const prompt = 'Then said Jesus unto his disciples, If any man will come after me';
  const r = await client.completions.create({ model: demo, prompt, max_tokens: 16, temperature: 0, n: 4 });
  const single = await client.completions.create({ model: demo, prompt, max_tokens: 16, temperature: 0 });
  const t = r.timings, u = r.usage;
  // the prompt once on the first choice's lane, then each other choice its last token
  return r.choices.length === 4 && r.choices.every((c) => c.text === single.choices[0].text)
    && u.prompt_tokens === single.usage.prompt_tokens && u.completion_tokens === 4 * single.usage.completion_tokens
    && t.cache_n + t.prompt_n === u.prompt_tokens + 3;
});

await check('n streamed (chat): the choices interleave by index, each a role chunk, its text, a finish', async () => {
  const stream = await client.chat.completions.create({ model: demo, max_tokens: 10, seed: 3, n: 3, stream: true,
    messages: [{ role: 'user', content: 'Who is my neighbour?' }] });
  const text = ['', '', ''], roles = [0, 0, 0], finishes = [0, 0, 0];
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      if (c.delta.role === 'assistant') roles[c.index]++;
      if (c.delta.content) text[c.index] += c.delta.content;
      if (c.finish_reason) finishes[c.index]++;
    }
  }
  const plain = await client.chat.completions.create({ model: demo, max_tokens: 10, seed: 3, n: 3,
    messages: [{ role: 'user', content: 'Who is my neighbour?' }] });
  return roles.every((n) => n === 1) && finishes.every((n) => n === 1)
    && plain.choices.every((c, i) => c.message.content === text[i]);
});

await check('n with json_schema: every choice parses and validates', async () => {
  const r = await client.chat.completions.create({ model: demo, max_tokens: 200, seed: 5, n: 2,
    messages: [{ role: 'user', content: 'Yes or no?' }],
    response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'object',
      properties: { answer: { type: 'boolean' } }, required: ['answer'], additionalProperties: false } } } });
  return r.choices.length === 2 && r.choices.every((c) => typeof JSON.parse(c.message.content).answer === 'boolean');
});

await check('embeddings: unit norm, equal inputs equal vectors (the client asks for base64 and decodes it)', async () => {
  const r = await client.embeddings.create({ model: demo, input: ['In the beginning', 'And God said', 'In the beginning'] });
  const [a, b, c] = r.data.map((d) => d.embedding);
  const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  const f = await client.embeddings.create({ model: demo, input: 'In the beginning', encoding_format: 'float' });
  return r.data.length === 3 && r.data.every((d, i) => d.index === i) && a.length > 16
    && Math.abs(norm(a) - 1) < 1e-5 && Math.abs(norm(b) - 1) < 1e-5
    && a.every((x, i) => x === c[i]) && !a.every((x, i) => x === b[i])
    // JSON carries the float32 values with 15 digits: the same floats once rounded to float32
    && f.data[0].embedding.every((x, i) => Math.fround(x) === a[i]) && r.usage.prompt_tokens > 3;
});

await check('json_schema with an unsupported keyword is a BadRequestError naming it', async () => {
  try {
    await client.chat.completions.create({ model: demo, messages,
      response_format: { type: 'json_schema', json_schema: { name: 's', schema: { type: 'string', format: 'email' } } } });
    return false;
  } catch (e) { return e instanceof OpenAI.BadRequestError && e.message.includes("'format'"); }
});

await check('tools on a model without tool support are a BadRequestError', async () => {
  try {
    await client.chat.completions.create({ model: demo, messages, tools });
    return false;
  } catch (e) { return e instanceof OpenAI.BadRequestError && e.message.includes('cannot take tools'); }
});

await check('an unknown field is a BadRequestError naming it', async () => {
  try {
    await client.completions.create({ model: demo, prompt: 'x', suffix: 'y' });
    return false;
  } catch (e) { return e instanceof OpenAI.BadRequestError && e.message.includes("'suffix'"); }
});

finish();
