#include "core/text/bpe.h"

#include <algorithm>
#include <atomic>
#include <cstdio>

#include "core/text/byte_level.h"
#include "core/text/utf8.h"

namespace ganpo::text {

namespace {

// HF caches words shorter than 256 bytes; longer ones are rare and would crowd the cache.
constexpr size_t kMaxCachedWordBytes = 256;
// Words kept per thread and model before the cache starts over.
constexpr size_t kCacheCapacity = 1 << 16;
// Caches of this many models are kept per thread (a program rarely uses more at once).
constexpr size_t kCachedModelsPerThread = 8;
// Up to this many symbols the array scan beats the heap.
constexpr size_t kSmallWord = 48;

std::atomic<uint64_t> next_uid{1};

}  // namespace

struct BpeModel::WordCache {
  StringIdMap index;  // word -> entry in spans
  std::vector<int32_t> ids;
  std::vector<std::pair<uint32_t, uint32_t>> spans;  // (offset in ids, count)

  bool get(std::string_view word, std::vector<int32_t>& out) const {
    const int32_t e = index.get(word, -1);
    if (e < 0) return false;
    const auto [off, n] = spans[static_cast<size_t>(e)];
    out.insert(out.end(), ids.begin() + off, ids.begin() + off + n);
    return true;
  }
  void put(std::string_view word, const int32_t* first, size_t n) {
    if (spans.size() >= kCacheCapacity) {
      index.clear();
      ids.clear();
      spans.clear();
    }
    index.set(word, static_cast<int32_t>(spans.size()));
    spans.emplace_back(static_cast<uint32_t>(ids.size()), static_cast<uint32_t>(n));
    ids.insert(ids.end(), first, first + n);
  }
};

BpeModel::~BpeModel() = default;

BpeModel::WordCache& BpeModel::cache(bool raw) const {
  struct Slot {
    uint64_t key;
    std::unique_ptr<WordCache> cache;
  };
  // Per thread, so encoding from several threads needs no lock; keyed by a model id that is
  // never reused, so a cache never outlives its meaning.
  thread_local std::vector<Slot> slots;
  const uint64_t key = uid_ * 2 + (raw ? 1 : 0);
  for (Slot& s : slots)
    if (s.key == key) return *s.cache;
  if (slots.size() >= kCachedModelsPerThread) slots.erase(slots.begin());
  slots.push_back({key, std::make_unique<WordCache>()});
  return *slots.back().cache;
}

std::unique_ptr<BpeModel> BpeModel::from_json(const nlohmann::json& j, const JsonPlace& at) {
  if (!j.is_object()) at.fail("expected the model object, found " + json_excerpt(j));
  const std::string what_to_do =
      "; this build reads BPE tokenizers (GPT-2, Llama, Qwen, Mistral, Gemma families)";
  auto type_it = j.find("type");
  if (type_it != j.end() && !(type_it->is_string() && type_it->get<std::string>() == "BPE"))
    at.child("type").fail("model type " + json_excerpt(*type_it) + " is not supported" + what_to_do);
  auto vocab_it = j.find("vocab");
  if (vocab_it == j.end() || !vocab_it->is_object())
    at.child("vocab").fail("expected an object mapping token to id" + what_to_do);
  auto merges_it = j.find("merges");
  if (merges_it == j.end() || !merges_it->is_array())
    at.child("merges").fail("expected a list of merges" + what_to_do);

  std::unique_ptr<BpeModel> m(new BpeModel());
  m->uid_ = next_uid.fetch_add(1);

  const JsonPlace vocab_at = at.child("vocab");
  m->vocab_.reserve(vocab_it->size());
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    const auto& v = it.value();
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= INT32_MAX)
      vocab_at.fail("token \"" + it.key() + "\" has id " + json_excerpt(v) +
                    "; ids must be integers from 0; the file is damaged, re-download it");
    const int32_t id = static_cast<int32_t>(v.get<int64_t>());
    m->vocab_.set(it.key(), id);
    m->max_id_ = std::max(m->max_id_, id);
  }
  // Ids index a table; a file whose ids are far beyond its size would make that table huge.
  if (m->max_id_ > static_cast<int64_t>(4 * vocab_it->size() + 1'000'000))
    vocab_at.fail("ids go up to " + std::to_string(m->max_id_) + " for " +
                  std::to_string(vocab_it->size()) + " tokens; the file is damaged, re-download it");
  m->token_spans_.assign(static_cast<size_t>(m->max_id_ + 1), {0u, ~0u});
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    const size_t id = static_cast<size_t>(it.value().get<int64_t>());
    m->token_spans_[id] = {static_cast<uint32_t>(m->token_arena_.size()),
                           static_cast<uint32_t>(it.key().size())};
    m->token_arena_ += it.key();
  }

  auto opt_string = [&](const char* key) -> std::string {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return {};
    if (!it->is_string()) at.child(key).fail("expected a string or null, found " + json_excerpt(*it));
    return it->get<std::string>();
  };
  m->unk_token_ = opt_string("unk_token");
  m->prefix_ = opt_string("continuing_subword_prefix");
  m->suffix_ = opt_string("end_of_word_suffix");
  m->fuse_unk_ = json_bool(j, "fuse_unk", false, at);
  m->byte_fallback_ = json_bool(j, "byte_fallback", false, at);
  m->ignore_merges_ = json_bool(j, "ignore_merges", false, at);
  // An unk token missing from the vocabulary makes HF fail on the first unknown character;
  // here such characters are dropped, as when there is no unk token at all.
  if (!m->unk_token_.empty()) m->unk_id_ = m->vocab_.get(m->unk_token_, -1);

  char name[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    m->byte_fallback_ids_[b] = m->vocab_.get(name, -1);
  }
  for (int c = 0; c < 128; ++c) {
    const char s[1] = {static_cast<char>(c)};
    m->ascii_ids_[c] = m->vocab_.get(std::string_view(s, 1), -1);
  }

  const JsonPlace merges_at = at.child("merges");
  m->merges_.reserve(merges_it->size());
  uint32_t rank = 0;
  std::string merged;
  for (size_t i = 0; i < merges_it->size(); ++i) {
    const auto& e = (*merges_it)[i];
    std::string_view a, b;
    std::string line;
    if (e.is_string()) {
      line = e.get<std::string>();
      if (line.rfind("#version", 0) == 0) continue;  // header line of merges.txt files
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        merges_at.index(i).fail("\"" + line +
                                "\" is not two tokens separated by one space; the file is damaged, "
                                "re-download it");
      a = std::string_view(line).substr(0, space);
      b = std::string_view(line).substr(space + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get_ref<const std::string&>();
      b = e[1].get_ref<const std::string&>();
    } else {
      merges_at.index(i).fail("expected \"a b\" or [\"a\", \"b\"], found " + json_excerpt(e) +
                              "; the file is damaged, re-download it");
    }
    const int32_t a_id = m->vocab_.get(a, -1), b_id = m->vocab_.get(b, -1);
    auto unknown = [&](std::string_view t) {
      merges_at.index(i).fail("merge " + json_excerpt(e) + " names \"" + std::string(t) +
                              "\", which is not in model.vocab; the vocabulary and merges do not "
                              "belong together: re-download tokenizer.json");
    };
    if (a_id < 0) unknown(a);
    if (b_id < 0) unknown(b);
    if (b.size() < m->prefix_.size()) unknown(b);
    merged.assign(a.data(), a.size());
    merged.append(b.substr(m->prefix_.size()));
    const int32_t new_id = m->vocab_.get(merged, -1);
    if (new_id < 0) unknown(merged);
    m->merges_.set(a_id, b_id, {rank++, new_id});
  }
  m->prepare_metaspace_split(*merges_it);
  return m;
}

void BpeModel::prepare_metaspace_split(const nlohmann::json& merges) {
  const std::string meta = "\xE2\x96\x81";  // U+2581
  // With ignore_merges a piece found whole in the vocabulary skips BPE, which a cut would
  // change; with a prefix or suffix the first and last symbols of a word are spelled apart.
  if (ignore_merges_ || !prefix_.empty() || !suffix_.empty() || vocab_.get(meta, -1) < 0) return;
  std::vector<char32_t> joins;
  auto scan = [&](std::string_view token) {
    for (size_t pos = token.find(meta, 1); pos != std::string_view::npos; pos = token.find(meta, pos + 1)) {
      size_t start = 0;
      const char32_t c = last_char(token.substr(0, pos), start);
      if (c != 0x2581 && std::find(joins.begin(), joins.end(), c) == joins.end()) joins.push_back(c);
    }
  };
  // Only tokens a merge produces can span a cut.
  std::string merged;
  for (const auto& e : merges) {
    if (e.is_string()) {
      merged = e.get<std::string>();
      const size_t space = merged.find(' ');
      if (space != std::string::npos) merged.erase(space, 1);
    } else {
      merged = e[0].get<std::string>() + e[1].get<std::string>();
    }
    if (merged.find(meta, 1) != std::string::npos) scan(merged);
  }
  // A tokenizer whose tokens join "▁" to many characters gains nothing from cutting.
  if (joins.size() > 64) return;
  joins_metaspace_ = std::move(joins);
  split_at_metaspace_ = true;
}

bool BpeModel::enable_raw_bytes() {
  if (raw_bytes_ok_) return true;
  if (!prefix_.empty() || !suffix_.empty()) return false;
  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
  for (int b = 0; b < 256; ++b) {
    byte_symbol_ids_[b] = vocab_.get(alphabet.utf8_of(static_cast<unsigned char>(b)), -1);
    if (byte_symbol_ids_[b] < 0) return false;
  }
  if (ignore_merges_) {
    raw_vocab_.reserve(vocab_.size());
    std::string raw, token;
    for (size_t id = 0; id < token_spans_.size(); ++id) {
      if (token_spans_[id].second == ~0u) continue;
      token.assign(token_arena_, token_spans_[id].first, token_spans_[id].second);
      if (alphabet.unspell(token, raw)) raw_vocab_.set(raw, static_cast<int32_t>(id));
    }
  }
  raw_bytes_ok_ = true;
  return true;
}

std::optional<std::string_view> BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= token_spans_.size()) return std::nullopt;
  const auto [off, len] = token_spans_[static_cast<size_t>(id)];
  if (len == ~0u) return std::nullopt;
  return std::string_view(token_arena_).substr(off, len);
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const {
  const bool plain = prefix_.empty() && suffix_.empty();
  bool unk_pending = false;
  std::string s;
  size_t i = 0;
  while (i < word.size()) {
    const size_t start = i;
    const unsigned char lead = static_cast<unsigned char>(word[i]);
    i += std::min(utf8_length(lead), word.size() - i);
    int32_t id;
    std::string_view piece = word.substr(start, i - start);
    if (plain) {
      id = lead < 0x80 ? ascii_ids_[lead] : vocab_.get(piece, -1);
    } else {
      s.clear();
      if (start != 0) s += prefix_;
      s += piece;
      if (i == word.size()) s += suffix_;
      piece = s;
      id = vocab_.get(piece, -1);
    }
    if (id >= 0) {
      if (unk_pending) {
        symbols.push_back(unk_id_);
        unk_pending = false;
      }
      symbols.push_back(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : piece) all = all && byte_fallback_ids_[b] >= 0;
      if (all) {
        // Like HF, a pending unk is not flushed before byte tokens.
        for (unsigned char b : piece) symbols.push_back(byte_fallback_ids_[b]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (unk_pending && !fuse_unk_) symbols.push_back(unk_id_);
      unk_pending = true;
    }
  }
  if (unk_pending) symbols.push_back(unk_id_);
}

void BpeModel::merge(std::vector<int32_t>& symbols) const {
  if (symbols.size() < 2) return;
  if (symbols.size() <= kSmallWord) merge_small(symbols);
  else merge_large(symbols);
}

// The lowest-ranked adjacent pair merges first, the leftmost among equals: the order HF's heap
// produces, found here by scanning a handful of cached ranks.
void BpeModel::merge_small(std::vector<int32_t>& symbols) const {
  size_t n = symbols.size();
  uint32_t ranks[kSmallWord];
  int32_t merged[kSmallWord];
  auto pair_at = [&](size_t i) {
    const PairMap::Value* v = merges_.find(symbols[i], symbols[i + 1]);
    ranks[i] = v ? v->rank : UINT32_MAX;
    merged[i] = v ? v->id : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) pair_at(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i)
      if (ranks[i] < ranks[best]) best = i;
    if (ranks[best] == UINT32_MAX) break;
    symbols[best] = merged[best];
    for (size_t i = best + 1; i + 1 < n; ++i) symbols[i] = symbols[i + 1];
    for (size_t i = best + 1; i + 2 < n; ++i) {
      ranks[i] = ranks[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best > 0) pair_at(best - 1);
    if (best + 1 < n) pair_at(best);
  }
  symbols.resize(n);
}

// HF's Word::merge_all: a min-heap of (rank, position) over a linked list of symbols, stale
// entries skipped when popped.
void BpeModel::merge_large(std::vector<int32_t>& symbols) const {
  const size_t n = symbols.size();
  std::vector<int32_t> prev(n), next(n);
  std::vector<char> alive(n, 1);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  struct Entry {
    uint64_t key;  // rank << 32 | position: smaller pops first
    int32_t id;
    bool operator<(const Entry& o) const { return key > o.key; }
  };
  std::vector<Entry> heap;
  heap.reserve(n);
  auto push = [&](size_t pos) {
    const int32_t nx = next[pos];
    if (nx < 0) return;
    if (const PairMap::Value* v = merges_.find(symbols[pos], symbols[static_cast<size_t>(nx)])) {
      heap.push_back({(static_cast<uint64_t>(v->rank) << 32) | pos, v->id});
      std::push_heap(heap.begin(), heap.end());
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Entry top = heap.back();
    heap.pop_back();
    const size_t pos = static_cast<size_t>(top.key & 0xFFFFFFFFu);
    if (!alive[pos] || next[pos] < 0) continue;
    const size_t right = static_cast<size_t>(next[pos]);
    const PairMap::Value* v = merges_.find(symbols[pos], symbols[right]);
    if (!v || v->id != top.id) continue;  // stale: a neighbour changed since it was queued
    symbols[pos] = top.id;
    alive[right] = 0;
    next[pos] = next[right];
    if (next[right] >= 0) prev[static_cast<size_t>(next[right])] = static_cast<int32_t>(pos);
    if (prev[pos] >= 0) push(static_cast<size_t>(prev[pos]));
    push(pos);
  }
  size_t w = 0;
  for (size_t i = 0; i < n; ++i)
    if (alive[i]) symbols[w++] = symbols[i];
  symbols.resize(w);
}

void BpeModel::encode_word(std::string_view word, bool raw, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const int32_t id = raw ? raw_vocab_.get(word, -1) : vocab_.get(word, -1);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() < kMaxCachedWordBytes;
  WordCache* c = cacheable ? &cache(raw) : nullptr;
  if (c && c->get(word, out)) return;
  thread_local std::vector<int32_t> symbols;
  symbols.clear();
  if (raw) {
    for (unsigned char b : word) symbols.push_back(byte_symbol_ids_[b]);
  } else {
    initial_symbols(word, symbols);
  }
  merge(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
  if (c) c->put(word, symbols.data(), symbols.size());
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (!split_at_metaspace_) {
    encode_word(word, false, out);
    return;
  }
  const std::string_view meta = "\xE2\x96\x81";
  size_t begin = 0;
  for (size_t pos = word.find(meta, 1); pos != std::string_view::npos; pos = word.find(meta, pos + 3)) {
    size_t start = 0;
    const char32_t c = last_char(word.substr(0, pos), start);
    if (c == 0x2581 || std::find(joins_metaspace_.begin(), joins_metaspace_.end(), c) != joins_metaspace_.end())
      continue;
    encode_word(word.substr(begin, pos - begin), false, out);
    begin = pos;
  }
  encode_word(word.substr(begin), false, out);
}

void BpeModel::tokenize_bytes(std::string_view raw, std::vector<int32_t>& out) const {
  if (raw_bytes_ok_) {
    encode_word(raw, true, out);
    return;
  }
  std::string spelled;
  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
  for (unsigned char b : raw) spelled += alphabet.utf8_of(b);
  encode_word(spelled, false, out);
}

}  // namespace ganpo::text
