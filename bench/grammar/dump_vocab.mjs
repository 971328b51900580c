// dump_vocab.mjs: writes the token byte strings of OpenAI's o200k_base
// vocabulary (js-tiktoken's ranks), one base64 string a line in rank order,
// for bench/grammar_bench.c. usage: node dump_vocab.mjs OUT
import fs from 'node:fs';
import o200k from 'js-tiktoken/ranks/o200k_base';

// js-tiktoken's format: each line is "! OFFSET base64 base64 ...", the tokens
// from rank OFFSET on.
const lines = [];
for (const line of o200k.bpe_ranks.split('\n').filter(Boolean)) {
  const [, offset, ...tokens] = line.split(' ');
  let rank = Number.parseInt(offset, 10);
  for (const t of tokens) lines[rank++] = t;
}
fs.writeFileSync(process.argv[2], lines.filter((x) => x !== undefined).join('\n') + '\n');
console.log(`${lines.length} tokens`);
