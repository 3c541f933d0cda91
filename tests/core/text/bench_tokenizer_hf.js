#!/usr/bin/env node
// Encoding speed of Hugging Face's tokenizers (Rust, through @anush008/tokenizers) on one
// thread, measured like tokenizer_bench.cpp: the text cut into the same chunks, each encoded
// without special tokens, best of ROUNDS. Prints MB/s, the token count and the same checksum.
//
// Usage: RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
//   node bench_tokenizer_hf.js TOKENIZER_FOLDER TEXT_FILE [CHUNK_BYTES] [ROUNDS] [NPM_PREFIX]
'use strict';
const fs = require('fs');
const path = require('path');
const os = require('os');

const [folder, textFile] = process.argv.slice(2, 4);
if (!folder || !textFile) {
  console.error('usage: bench_tokenizer_hf.js TOKENIZER_FOLDER TEXT_FILE [CHUNK_BYTES] [ROUNDS] [NPM_PREFIX]');
  process.exit(2);
}
const chunkBytes = Number(process.argv[4] || 65536);
const rounds = Number(process.argv[5] || 3);
const prefix = process.argv[6] || process.env.GANPO_TEST_DATA_DIR ||
    path.join(os.homedir(), '.cache', 'ganpo-workbench', 'npm');
const { Tokenizer } = require(path.join(prefix, 'node_modules', '@anush008', 'tokenizers'));

// Same cut as tokenizer_bench.cpp: at the first newline after each CHUNK_BYTES, on bytes.
const bytes = fs.readFileSync(textFile);
const chunks = [];
for (let pos = 0; pos < bytes.length;) {
  let end = Math.min(bytes.length, pos + (chunkBytes || bytes.length));
  if (end < bytes.length) {
    const nl = bytes.indexOf(10, end);
    end = nl < 0 ? bytes.length : nl + 1;
  }
  chunks.push(bytes.subarray(pos, end).toString('utf8'));
  pos = end;
}

async function main() {
  const t0 = process.hrtime.bigint();
  const tok = Tokenizer.fromFile(path.join(folder, 'tokenizer.json'));
  const loadS = Number(process.hrtime.bigint() - t0) / 1e9;
  let best = Infinity, first = 0, all = [];
  for (let r = 0; r < Math.max(1, rounds); r++) {
    const ids = [];
    const start = process.hrtime.bigint();
    for (const c of chunks) ids.push((await tok.encode(c, null, { addSpecialTokens: false })).getIds());
    const s = Number(process.hrtime.bigint() - start) / 1e9;
    if (r === 0) first = s;
    best = Math.min(best, s);
    all = ids;
  }
  let count = 0n, checksum = 0n;
  const mask = (1n << 64n) - 1n;
  for (const ids of all) {
    for (const id of ids) checksum = (checksum * 1000003n + BigInt(id)) & mask;
    count += BigInt(ids.length);
  }
  const mb = bytes.length / 1e6;
  console.log(`HF tokenizers (Rust): ${(mb / best).toFixed(2)} MB/s (best of ${rounds}; first round ` +
              `${(mb / first).toFixed(2)} MB/s), ${mb.toFixed(2)} MB in ${chunks.length} chunks, ` +
              `${count} tokens, checksum ${checksum}, load ${loadS.toFixed(2)} s`);
}

main().catch((e) => { console.error(e); process.exit(1); });
