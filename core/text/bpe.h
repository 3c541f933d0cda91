// The BPE model of tokenizer.json: vocabulary, merges, and the merge loop.
//
// tokenize() turns one pre-token into ids exactly as Hugging Face tokenizers' BPE does: start
// from one symbol per character (unknown characters become <0xNN> byte tokens with
// byte_fallback, else the unk token, fused with fuse_unk), then repeatedly merge the adjacent
// pair with the lowest merge rank, leftmost first. With ignore_merges a pre-token that is
// itself in the vocabulary is one token. Short words use a scan over a small array, long
// ones a heap over a linked list, and results of words under 256 bytes are cached per thread.
//
// Byte-level vocabularies can take pre-tokens as raw bytes (tokenize_bytes): the model maps
// each byte to its alphabet symbol itself, so the text is never spelled out as "ĠHello".
// Merges may be "a b" strings or ["a", "b"] pairs. dropout is ignored (encoding is
// deterministic); continuing_subword_prefix and end_of_word_suffix are honoured.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/text/hash_maps.h"
#include "core/text/json_read.h"

namespace ganpo::text {

class BpeModel {
public:
  // Reads tokenizer.json's "model" object; throws ModelFileError naming `at` (unknown model
  // type, missing vocab, a merge naming a token that is not in the vocabulary, ...).
  static std::unique_ptr<BpeModel> from_json(const nlohmann::json& model, const JsonPlace& at);
  ~BpeModel();

  // Appends the ids of one pre-token (valid UTF-8 in the vocabulary's own alphabet).
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  // Prepares tokenize_bytes(): possible when every one of the 256 byte-level symbols is in the
  // vocabulary and there is no subword prefix or suffix. Returns whether it is.
  bool enable_raw_bytes();
  // Appends the ids of a pre-token given as raw bytes of a byte-level vocabulary (spelled
  // first when enable_raw_bytes() was not possible).
  void tokenize_bytes(std::string_view raw, std::vector<int32_t>& out) const;

  int32_t token_to_id(std::string_view token) const { return vocab_.get(token, -1); }
  std::optional<std::string_view> id_to_token(int32_t id) const;
  size_t vocab_size() const { return vocab_.size(); }  // entries in model.vocab
  int32_t max_id() const { return max_id_; }
  const std::string& unk_token() const { return unk_token_; }

private:
  BpeModel() = default;
  struct WordCache;
  WordCache& cache(bool raw) const;
  // Initial symbols of a UTF-8 pre-token (byte fallback, unk fusing).
  void initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const;
  void merge(std::vector<int32_t>& symbols) const;
  void merge_small(std::vector<int32_t>& symbols) const;
  void merge_large(std::vector<int32_t>& symbols) const;
  void encode_word(std::string_view word, bool raw, std::vector<int32_t>& out) const;
  void prepare_metaspace_split(const nlohmann::json& merges);

  StringIdMap vocab_;
  StringIdMap raw_vocab_;  // byte-level: raw bytes of a token -> id (for ignore_merges)
  PairMap merges_;
  std::string token_arena_;
  std::vector<std::pair<uint32_t, uint32_t>> token_spans_;  // id -> (offset, len); len ~0u = none
  int32_t max_id_ = -1;

  std::string unk_token_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string prefix_;  // continuing_subword_prefix
  std::string suffix_;  // end_of_word_suffix
  int32_t byte_fallback_ids_[256];  // <0xNN> ids, -1 when absent
  int32_t ascii_ids_[128];          // ids of one-character ASCII tokens, -1 when absent
  // SentencePiece-style vocabularies: a word may be cut before each "▁" that follows a
  // character no merge (or, with ignore_merges, no token) ever joins to a "▁", since BPE can
  // never merge across such a point; the pieces then share the word cache. Llama 2 / Mistral
  // and Gemma files have no pre-tokenizer, so without this a whole text is one word.
  bool split_at_metaspace_ = false;
  std::vector<char32_t> joins_metaspace_;  // characters seen right before a "▁" in a token
  bool raw_bytes_ok_ = false;
  int32_t byte_symbol_ids_[256];    // byte-level: id of the symbol spelling each byte
  uint64_t uid_ = 0;                // tells this model's per-thread caches from others'
};

}  // namespace ganpo::text
