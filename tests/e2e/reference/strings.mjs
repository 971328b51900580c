// strings.mjs: the texts tokenize.mjs gives both tokenizers: hand-picked
// edge cases, then seeded random mixes of the same kinds of characters.
// Only valid Unicode: node-llama-cpp takes JS strings, so invalid UTF-8 can
// not reach llama.cpp this way (test_tokenizer.c and the fuzz target cover it).

export const fixed = [
    "",
    " ",
    "  ",
    "\n",
    "\n\n\n",
    "\t",
    "\r\n",
    " \n \n ",
    "Hello",
    "Hello world",
    " Hello world",
    "  Hello  world  ",
    "Hello, world! How are you?",
    "The quick brown fox jumps over the lazy dog.",
    "In the beginning God created the heaven and the earth.",
    "And Jesus said unto them, Ye shall not go up.",
    // contractions, case
    "I'm you're she'll he'd it's we've they'd",
    "I'M YOU'RE SHE'LL HE'D IT'S WE'VE",
    "don't DON'T Don'T 's 't 're 've 'm 'll 'd",
    "'s'S'sS",
    "rock 'n' roll ''quoted'' `back`",
    "l'homme aujourd'hui",
    // digits
    "0 1 12 123 1234 12345 123456 1234567 12345678",
    "3.14159 2,718 1e-10 -42 +7 0x1F 1_000_000",
    "2024-05-17T10:30:00Z",
    "Call 555-0100 or (555) 010-0199 x123",
    "v1.2.3-rc.4+build.567",
    "١٢٣ ٤٥٦ ۷۸۹ 一二三 ²³ ⅫⅣ ½",
    // whitespace kinds
    "a  b   c    d     e",
    "line1\nline2\n\nline4\r\nline5\rline6",
    "tab\tseparated\t\tvalues\t",
    "trailing spaces   ",
    "   leading spaces",
    "mixed \t \n \t  \n",
    "no\u00a0break\u00a0space and\u2009thin\u3000ideographic",
    "nel\u0085line\u2028sep\u2029para",
    "    def main():\n        return 0\n",
    "{\n  \"key\": [1, 2, 3],\n  \"x\": null\n}",
    "if (a <= b && c != d) { x += y >> 2; } // done",
    "<html><body class=\"x\">&amp;&lt;</body></html>",
    "$var = @array[0] % 2 ^ ~mask | flag;",
    "...!!!???---___***",
    "=====\n#####\n~~~~~",
    // Latin, Greek, Cyrillic, RTL, Indic
    "Café naïve résumé façade über Straße",
    "ÀÉÎÕÜ àéîõü Ǆ ǅ ǆ ŉ ﬁ ﬂ",
    "Καλημέρα κόσμε, ΚΑΛΗΜΕΡΑ",
    "Привет, мир! ПРИВЕТ",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "e\u0301 a\u0308 n\u0303 combining",
    // CJK
    "你好世界",
    "你好，世界！我们在中国。",
    "中国人 中国 人",
    "こんにちは世界",
    "カタカナとひらがなと漢字",
    "안녕하세요 세계",
    "日本語のテキスト、句読点。「括弧」",
    "混合mixed文字text123数字",
    // emoji
    "👍",
    "👍👍👍",
    "ok 👍 great 😀 launch 🚀",
    "👨‍👩‍👧‍👦 family",
    "🇺🇸🇫🇷🇯🇵 flags",
    "👋🏽 skin tone",
    "❤️ ☺️ ✔︎ variation selectors",
    "🧑🏿‍🚀 astronaut",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝟙𝟚𝟛",
    // special-token texts (ids differ with --special)
    "<|endoftext|>",
    "<|bos|>Hello<|endoftext|>",
    "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more",
    "<|im_start|><|im_start|>",
    "<|im_",
    "<|endoftext|",
    "< |endoftext| >",
    "<tool>call</tool>",
    "before <tool> after",
    "<s>Hello</s>",
    "<unk> <s> </s>",
    " <|endoftext|> ",
    "\n<|im_start|>\n",
    "unreachable ▁unreachable",
    "jumps! jumps!!",
    "▁leading▁block▁chars",
    // longer
    "The LORD is my shepherd; I shall not want. He maketh me to lie down in green pastures: " +
        "he leadeth me beside the still waters. He restoreth my soul.",
];

// Pieces the random strings are made of.
const pool = [
    "a", "e", "the", "The", "THE", "Hello", "world", "jumps", "fox", "unreachable",
    " ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\u00a0", "\u3000",
    "0", "7", "12", "123", "4096", "1999", "3.14", ",", ".", "!", "?", "...", "'s", "'t", "'LL",
    "'", "\"", "(", ")", "[", "]", "{", "}", "<", ">", "=", "+", "-", "_", "$", "%", "^", "~", "|", "`", "#", "@",
    "é", "ß", "ñ", "Ж", "ж", "λ", "Ω", "ا", "ש", "न", "ि", "ก",
    "你", "好", "世界", "中国", "人", "こんにちは", "カ", "안녕", "。", "，",
    "👍", "😀", "🚀", "👨‍👩‍👧", "🇺🇸", "🏽", "\u200d", "\ufe0f", "𝔘",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>", "<|bos|>", "<s>", "</s>", "<|", "|>",
    "▁", "Ġ", "Ċ",
];

// Deterministic random strings: count of them, each of 1..maxPieces pieces.
export function randomStrings(count, maxPieces, seed) {
    let s = seed >>> 0;
    const next = () => {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        return s / 4294967296;
    };
    const out = [];
    for (let i = 0; i < count; i++) {
        const n = 1 + Math.floor(next() * maxPieces);
        let t = "";
        for (let j = 0; j < n; j++) t += pool[Math.floor(next() * pool.length)];
        out.push(t);
    }
    return out;
}
