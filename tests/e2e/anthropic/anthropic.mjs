// anthropic.mjs: the official Anthropic Node client against llmesh's
// /v1/messages: plain and streamed messages (the event sequence; the streamed
// text equals the plain greedy answer), system prompts, stop_sequences,
// max_tokens, count_tokens, tool use (forced by name and with 'any', plain and
// streamed, on models with the real Qwen2.5, Llama 3.2 and Mistral v0.3
// templates and random weights) and the tool_result turn after it, the errors
// in Anthropic's shape, the API key as x-api-key, and an assistant prefill (the
// answer continues the last turn; message_start carries the prompt's count). Random weights: only
// what is deterministic is asserted (greedy text on the demo model; a forced
// call parses and fits its schema).
// usage: node anthropic.mjs BASE_URL KEYED_BASE_URL KEY DEMO_MODEL TOOL_MODEL...
// Prints one line per check and "N passed, N failed"; exits 1 on failure.
import Anthropic from '@anthropic-ai/sdk';
import { check, finish } from '../openai/checks.mjs';

const [baseURL, keyedURL, key, demo, ...toolModels] = process.argv.slice(2);
const client = new Anthropic({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 120000 });

const prompt = [{ role: 'user', content: 'In the beginning' }];
let greedy = null; // the plain greedy answer's text, 24 tokens

await check('a plain message: a message object with a text block, max_tokens reached', async () => {
  const r = await client.messages.create({ model: demo, max_tokens: 24, temperature: 0, messages: prompt });
  greedy = r.content[0]?.text;
  return r.type === 'message' && r.role === 'assistant' && /^msg_/.test(r.id) && r.model === demo
    && r.content.length === 1 && r.content[0].type === 'text' && greedy.length > 0
    && r.stop_reason === 'max_tokens' && r.stop_sequence === null && r.usage.output_tokens === 24
    && r.usage.input_tokens + r.usage.cache_read_input_tokens > 2;
});

await check('streamed: the event sequence, and the text equals the plain greedy answer', async () => {
  const stream = await client.messages.create({ model: demo, max_tokens: 24, temperature: 0, messages: prompt,
    stream: true });
  const types = [];
  let text = '', delta = null;
  for await (const ev of stream) {
    types.push(ev.type);
    if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
    if (ev.type === 'message_delta') delta = ev;
  }
  const seq = types.join(' ');
  const ok = /^message_start content_block_start( content_block_delta)+ content_block_stop message_delta message_stop$/
    .test(seq) && text === greedy && delta.delta.stop_reason === 'max_tokens' && delta.usage.output_tokens === 24;
  if (!ok) console.log(`  got ${seq}\n  text ${JSON.stringify(text)}\n  vs   ${JSON.stringify(greedy)}`);
  return ok;
});

await check("the client's stream helper: finalMessage equals the plain answer, usage from message_delta", async () => {
  const s = client.messages.stream({ model: demo, max_tokens: 24, temperature: 0, messages: prompt });
  const m = await s.finalMessage();
  const c = await client.messages.countTokens({ model: demo, messages: prompt });
  return m.content[0].text === greedy && m.stop_reason === 'max_tokens' && m.usage.output_tokens === 24
    && m.usage.input_tokens + m.usage.cache_read_input_tokens === c.input_tokens;
});

await check('max_tokens: stop_reason max_tokens after exactly that many tokens', async () => {
  const r = await client.messages.create({ model: demo, max_tokens: 3, temperature: 0, messages: prompt });
  return r.stop_reason === 'max_tokens' && r.usage.output_tokens === 3 && greedy.startsWith(r.content[0].text);
});

await check('stop_sequences: the answer stops before the sequence, stop_reason stop_sequence', async () => {
  // a word from the middle of the greedy answer: the answer is its text up to that word
  const words = greedy.split(/\s+/).filter((w) => /^[A-Za-z]{3,}$/.test(w));
  const word = words[Math.floor(words.length / 2)];
  if (!word) { console.log(`  no word to stop on in ${JSON.stringify(greedy)}`); return false; }
  const r = await client.messages.create({ model: demo, max_tokens: 24, temperature: 0, messages: prompt,
    stop_sequences: ['ZZZnever', word] });
  const s = client.messages.stream({ model: demo, max_tokens: 24, temperature: 0, messages: prompt,
    stop_sequences: [word] });
  const m = await s.finalMessage();
  const before = greedy.slice(0, greedy.indexOf(word));
  return r.stop_reason === 'stop_sequence' && r.stop_sequence === word && (r.content[0]?.text ?? '') === before
    && m.stop_reason === 'stop_sequence' && m.stop_sequence === word && (m.content[0]?.text ?? '') === before;
});

await check('count_tokens counts the prompt a message is given (input + cache_read)', async () => {
  const c = await client.messages.countTokens({ model: demo, messages: prompt });
  const r = await client.messages.create({ model: demo, max_tokens: 1, messages: prompt });
  return c.input_tokens > 2 && c.input_tokens === r.usage.input_tokens + r.usage.cache_read_input_tokens;
});

const tmodel = toolModels[0];
await check('system: rendered by the template (a string and text blocks alike; longer is more tokens)', async () => {
  const messages = [{ role: 'user', content: 'Hello' }];
  const sys = 'You are a terse assistant.';
  const str = await client.messages.countTokens({ model: tmodel, messages, system: sys });
  const blocks = await client.messages.countTokens({ model: tmodel, messages, system: [{ type: 'text', text: sys }] });
  const longer = await client.messages.countTokens({ model: tmodel, messages,
    system: `${sys} Answer in one short sentence, in English, without lists.` });
  const r = await client.messages.create({ model: tmodel, max_tokens: 2, messages, system: sys });
  return longer.input_tokens > str.input_tokens + 5 && blocks.input_tokens === str.input_tokens
    && r.usage.input_tokens + r.usage.cache_read_input_tokens === str.input_tokens;
});

const tools = [
  { name: 'get_weather', description: 'The weather in a city', input_schema: { type: 'object',
    properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['celsius', 'fahrenheit'] } },
    required: ['city', 'unit'], additionalProperties: false } },
  { name: 'get_time', input_schema: { type: 'object', properties: { zone: { type: 'string', maxLength: 8 } },
    additionalProperties: false } },
];
const ask = [{ role: 'user', content: 'Weather in Paris?' }];
function inputOk(block) {
  if (block.type !== 'tool_use' || !/^toolu_[A-Za-z0-9]{9}$/.test(block.id)) return false;
  const a = block.input;
  if (block.name === 'get_weather')
    return typeof a.city === 'string' && [...a.city].length <= 12 && ['celsius', 'fahrenheit'].includes(a.unit)
      && Object.keys(a).length === 2;
  return block.name === 'get_time' && typeof a === 'object' && Object.keys(a).every((k) => k === 'zone');
}

for (const model of toolModels) {
  let first = null;
  await check(`${model}: a tool forced by name: one tool_use block that fits the schema`, async () => {
    const r = await client.messages.create({ model, max_tokens: 400, temperature: 0, system: 'Use the tools.', messages: ask, tools,
      tool_choice: { type: 'tool', name: 'get_weather' } });
    first = r;
    const uses = r.content.filter((b) => b.type === 'tool_use');
    const ok = r.stop_reason === 'tool_use' && uses.length === 1 && uses[0].name === 'get_weather' && inputOk(uses[0]);
    if (!ok) console.log(`  got ${r.stop_reason} ${JSON.stringify(r.content)}`);
    return ok;
  });
  await check(`${model}: tool_choice any, streamed: input_json_delta fragments join into the input`, async () => {
    const s = client.messages.stream({ model, max_tokens: 400, temperature: 0, messages: ask, tools, tool_choice: { type: 'any' } });
    let json = '', fragments = 0, starts = 0;
    s.on('streamEvent', (ev) => {
      if (ev.type === 'content_block_delta' && ev.delta.type === 'input_json_delta') { json += ev.delta.partial_json; fragments++; }
      if (ev.type === 'content_block_start' && ev.content_block.type === 'tool_use') starts++;
    });
    const m = await s.finalMessage();
    const use = m.content.find((b) => b.type === 'tool_use');
    const ok = m.stop_reason === 'tool_use' && starts === 1 && use && inputOk(use) && fragments >= 1
      && JSON.stringify(JSON.parse(json)) === JSON.stringify(use.input) && (json.length <= 32 || fragments >= 2);
    if (!ok) console.log(`  got ${m.stop_reason} ${JSON.stringify(m.content)} from ${fragments} fragments: ${json}`);
    return ok;
  });
  await check(`${model}: the next turn with tool_result renders the call and its result`, async () => {
    if (!first) return false;
    const use = first.content.find((b) => b.type === 'tool_use');
    const history = [...ask, { role: 'assistant', content: first.content }];
    const result = (content, extra = {}) => [...history,
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content, ...extra }] }];
    const r = await client.messages.create({ model, max_tokens: 8, tools, messages: result('18 degrees') });
    const short = await client.messages.countTokens({ model, tools, messages: result('18 degrees') });
    const long = await client.messages.countTokens({ model, tools,
      messages: result([{ type: 'text', text: '18 degrees, light rain from the west in the afternoon' }]) });
    const failed = await client.messages.countTokens({ model, tools, messages: result('18 degrees', { is_error: true }) });
    return ['end_turn', 'max_tokens', 'tool_use'].includes(r.stop_reason) && long.input_tokens > short.input_tokens
      && failed.input_tokens > short.input_tokens;
  });
}

async function refused(what, fn, cls, type, text) {
  await check(what, async () => {
    try {
      await fn();
      return false;
    } catch (e) {
      const ok = e instanceof cls && e.error?.type === 'error' && e.error?.error?.type === type
        && (!text || e.message.includes(text));
      if (!ok) console.log(`  got ${e.constructor.name} ${e.status} ${JSON.stringify(e.error)}`);
      return ok;
    }
  });
}
await refused('no max_tokens: BadRequestError, invalid_request_error naming it',
  () => client.messages.create({ model: demo, messages: prompt }), Anthropic.BadRequestError,
  'invalid_request_error', 'max_tokens');
await refused('an unknown model: NotFoundError, not_found_error',
  () => client.messages.create({ model: 'no-such-model', max_tokens: 4, messages: prompt }), Anthropic.NotFoundError,
  'not_found_error');
await refused('an unimplemented field (thinking): BadRequestError naming it',
  () => client.messages.create({ model: demo, max_tokens: 4, messages: prompt,
    thinking: { type: 'enabled', budget_tokens: 1024 } }), Anthropic.BadRequestError, 'invalid_request_error',
  "'thinking'");
await refused('an image block: BadRequestError',
  () => client.messages.create({ model: demo, max_tokens: 4, messages: [{ role: 'user', content: [
    { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AAAA' } }] }] }),
  Anthropic.BadRequestError, 'invalid_request_error', "'image'");
await refused('a document block: BadRequestError (no vision or document model in the engine)',
  () => client.messages.create({ model: demo, max_tokens: 4, messages: [{ role: 'user', content: [
    { type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'x' } }] }] }),
  Anthropic.BadRequestError, 'invalid_request_error', "'document'");

// ---- prefill: a last assistant turn the answer continues
const prefilled = [{ role: 'user', content: 'In the beginning' }, { role: 'assistant', content: 'And God' }];
await check('prefill: the answer continues the assistant turn (= a completion of the prompt ending in its text)',
  async () => {
    const r = await client.messages.create({ model: demo, max_tokens: 12, temperature: 0, messages: prefilled });
    // the demo model has no chat template: the plain form, "Assistant: " and the text
    const res = await fetch(`${baseURL}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: demo, max_tokens: 12, temperature: 0,
        prompt: 'User: In the beginning\nAssistant: And God' }) });
    const c = await res.json();
    const ok = r.content[0].text === c.choices[0].text && r.content[0].text.length > 0
      && r.usage.input_tokens + r.usage.cache_read_input_tokens === c.usage.prompt_tokens;
    if (!ok) console.log(`  got ${JSON.stringify(r.content[0].text)} vs ${JSON.stringify(c.choices[0].text)}`);
    return ok;
  });
for (const model of [demo, ...toolModels]) {
  await check(`prefill, streamed (${model}): message_start has the prompt's input_tokens (= count_tokens)`, async () => {
    const msgs = [{ role: 'user', content: 'What is the weather?' }, { role: 'assistant', content: 'The weather is' }];
    const stream = await client.messages.create({ model, max_tokens: 4, temperature: 0, messages: msgs, stream: true });
    let start = null, delta = null;
    for await (const ev of stream) {
      if (ev.type === 'message_start') start = ev.message.usage;
      if (ev.type === 'message_delta') delta = ev.usage;
    }
    const c = await client.messages.countTokens({ model, messages: msgs });
    const open = await client.messages.countTokens({ model, messages: msgs.slice(0, 1) });
    const ok = start.input_tokens + start.cache_read_input_tokens === c.input_tokens
      && delta.input_tokens + delta.cache_read_input_tokens === c.input_tokens
      && start.input_tokens === delta.input_tokens && c.input_tokens > open.input_tokens;
    if (!ok) console.log(`  start ${JSON.stringify(start)} delta ${JSON.stringify(delta)} count ${c.input_tokens}`);
    return ok;
  });
}
await refused('prefill with trailing white space: BadRequestError, as Anthropic',
  () => client.messages.create({ model: demo, max_tokens: 4, messages: [{ role: 'user', content: 'x' },
    { role: 'assistant', content: 'And ' }] }), Anthropic.BadRequestError, 'invalid_request_error', 'trailing whitespace');

await check('metadata is ignored (the documented rule)', async () => {
  const r = await client.messages.create({ model: demo, max_tokens: 2, messages: prompt, metadata: { user_id: 'u1' } });
  return r.type === 'message';
});

const keyed = new Anthropic({ baseURL: keyedURL, apiKey: key, maxRetries: 0, timeout: 120000 });
await check('the API key as x-api-key (apiKey) is taken', async () => {
  const r = await keyed.messages.create({ model: demo, max_tokens: 4, messages: prompt });
  return r.type === 'message' && r.usage.output_tokens === 4;
});
await check('the API key as a bearer token (authToken) is taken', async () => {
  const bearer = new Anthropic({ baseURL: keyedURL, apiKey: null, authToken: key, maxRetries: 0 });
  const r = await bearer.messages.create({ model: demo, max_tokens: 4, messages: prompt });
  return r.type === 'message';
});
await refused('a wrong key: AuthenticationError, authentication_error',
  () => new Anthropic({ baseURL: keyedURL, apiKey: `${key}x`, maxRetries: 0 }).messages.create({ model: demo,
    max_tokens: 4, messages: prompt }), Anthropic.AuthenticationError, 'authentication_error');

finish();
