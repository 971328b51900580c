// tokenize.mjs: llmesh's token ids against llama.cpp's, string by string.
//
//   node tokenize.mjs --llmesh BIN --model PATH [--model PATH ...]
//                     [--random N] [--text FILE ...]
//
// For every vocabulary file, every string of strings.mjs (plus N seeded
// random ones and each --text file whole) is tokenized by llama.cpp
// (llama_tokenize with add_special = false; parse_special false and true)
// and by `llmesh tokenize` (without and with --special). Each (file, string,
// mode) whose ids differ is one failure, printed with the string and both id
// lists with their pieces; known.mjs lists accepted differences.
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {basename, join} from "node:path";

import {isKnown} from "./known.mjs";
import {Tally, list, llmesh, loadLlama, parseArgs} from "./lib.mjs";
import {fixed, randomStrings} from "./strings.mjs";

const args = parseArgs(process.argv.slice(2));
const texts = [...fixed, ...randomStrings(Number(args.random ?? 0), 12, 20240517)];
for (const f of list(args.text)) texts.push(readFileSync(f, "utf8"));

const llama = await loadLlama();
const dir = mkdtempSync(join(tmpdir(), "llmesh-tokenize-"));
const files = texts.map((t, i) => {
    const f = join(dir, `s${i}.txt`);
    writeFileSync(f, t, "utf8");
    return f;
});

let status = 0;
try {
    for (const path of list(args.model)) {
        const name = basename(path, ".gguf");
        const tally = new Tally(`tokenize ${name}`);
        const model = await llama.loadModel({modelPath: path, vocabOnly: true});
        const piece = (id) => JSON.stringify(model.detokenize([id], true));
        for (const special of [false, true]) {
            const mode = special ? "special" : "plain";
            const fileArgs = files.flatMap((f) => ["--file", f]);
            const out = llmesh(args.llmesh, ["tokenize", "--model", path, ...(special ? ["--special"] : []), ...fileArgs]);
            const lines = out.split("\n");
            for (let i = 0; i < texts.length; i++) {
                const want = model.tokenize(texts[i], special);
                const got = lines[i] ? lines[i].split(" ").map(Number) : [];
                if (want.length === got.length && want.every((id, k) => id === got[k])) {
                    tally.pass();
                    continue;
                }
                let k = 0;
                while (k < want.length && want[k] === got[k]) k++;
                const msg = `${mode} ${JSON.stringify(texts[i].slice(0, 300))}: ids differ from #${k}\n` +
                    `    llama.cpp: ${want.slice(k, k + 12).map((id) => `${id}${piece(id)}`).join(" ")}\n` +
                    `    llmesh:    ${got.slice(k, k + 12).map((id) => `${id}${piece(id)}`).join(" ")}`;
                const known = isKnown("tokenize", name, texts[i], mode);
                if (known) tally.knownDiff(`${msg}\n    (${known})`);
                else tally.fail(msg);
            }
        }
        await model.dispose();
        console.log(`tokenize ${name}: ${tally.passed} strings x modes equal, ${tally.failed} differ, ${tally.known} known`);
        status |= tally.finish();
    }
} finally {
    rmSync(dir, {recursive: true, force: true});
}
process.exit(status);
