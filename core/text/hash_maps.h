// Flat hash maps for the tokenizer's hot loops.
//
// Encoding looks up every pre-token in the vocabulary or the word cache and every adjacent pair
// of symbols in the merge table, millions of times per second. std::unordered_map<std::string>
// allocates a key per lookup in C++17 and chases a pointer per bucket; these maps keep keys in
// one arena, use open addressing with linear probing, and look up by std::string_view.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace ganpo::text {

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0x87c37b91114253d5ULL);
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ (v * 0x87c37b91114253d5ULL)) * 0x4cf5ad432745937fULL;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  if (n) {
    uint64_t v = 0;
    std::memcpy(&v, p, n);
    h = (h ^ (v * 0x87c37b91114253d5ULL)) * 0x4cf5ad432745937fULL;
  }
  return mix64(h);
}

// string -> int32 (ids, or indices of cached values). Keys live in one arena.
class StringIdMap {
public:
  StringIdMap() { rehash(16); }

  size_t size() const { return size_; }

  void reserve(size_t n) {
    size_t want = 16;
    while (want < n * 2) want <<= 1;
    if (want > slots_.size()) rehash(want);
  }

  // Inserts or overwrites (a later duplicate wins, as in a JSON object read by HF).
  void set(std::string_view key, int32_t value) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.size() * 2);
    const uint64_t h = hash_bytes(key.data(), key.size());
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.len == kEmpty) {
        s.offset = static_cast<uint32_t>(arena_.size());
        s.len = static_cast<uint32_t>(key.size());
        s.tag = tag;
        s.value = value;
        arena_.append(key.data(), key.size());
        ++size_;
        return;
      }
      if (s.tag == tag && s.len == key.size() &&
          std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0) {
        s.value = value;
        return;
      }
    }
  }

  // The value for `key`, or `missing`.
  int32_t get(std::string_view key, int32_t missing = -1) const {
    const uint64_t h = hash_bytes(key.data(), key.size());
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.len == kEmpty) return missing;
      if (s.tag == tag && s.len == key.size() &&
          std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0)
        return s.value;
    }
  }

  void clear() {
    arena_.clear();
    size_ = 0;
    for (Slot& s : slots_) s.len = kEmpty;
  }

  size_t arena_bytes() const { return arena_.size(); }

private:
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  struct Slot {
    uint32_t offset = 0;
    uint32_t len = kEmpty;
    uint32_t tag = 0;
    int32_t value = 0;
  };

  void rehash(size_t n) {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(n, Slot{});
    mask_ = n - 1;
    for (const Slot& s : old) {
      if (s.len == kEmpty) continue;
      const uint64_t h = hash_bytes(arena_.data() + s.offset, s.len);
      size_t i = h & mask_;
      while (slots_[i].len != kEmpty) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }

  std::vector<Slot> slots_;
  std::string arena_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

// (left id, right id) -> (merge rank, merged id): the BPE merge table.
class PairMap {
public:
  struct Value {
    uint32_t rank;
    int32_t id;
  };

  void reserve(size_t n) {
    size_t want = 16;
    while (want < n * 2) want <<= 1;
    keys_.assign(want, kEmpty);
    values_.assign(want, Value{0, -1});
    mask_ = want - 1;
  }

  // A later merge of the same pair overwrites the earlier one, as HF's hash map does.
  void set(int32_t a, int32_t b, Value v) {
    if (keys_.empty() || (size_ + 1) * 2 > keys_.size()) grow();
    const uint64_t key = pack(a, b);
    for (size_t i = mix64(key) & mask_;; i = (i + 1) & mask_) {
      if (keys_[i] == kEmpty) {
        keys_[i] = key;
        values_[i] = v;
        ++size_;
        return;
      }
      if (keys_[i] == key) {
        values_[i] = v;
        return;
      }
    }
  }

  // nullptr when the pair does not merge.
  const Value* find(int32_t a, int32_t b) const {
    if (keys_.empty()) return nullptr;
    const uint64_t key = pack(a, b);
    for (size_t i = mix64(key) & mask_;; i = (i + 1) & mask_) {
      if (keys_[i] == key) return &values_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }

  size_t size() const { return size_; }

private:
  static constexpr uint64_t kEmpty = ~0ULL;
  static uint64_t pack(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void grow() {
    std::vector<uint64_t> keys;
    std::vector<Value> values;
    keys.swap(keys_);
    values.swap(values_);
    const size_t n = keys.empty() ? 16 : keys.size() * 2;
    keys_.assign(n, kEmpty);
    values_.assign(n, Value{0, -1});
    mask_ = n - 1;
    for (size_t j = 0; j < keys.size(); ++j) {
      if (keys[j] == kEmpty) continue;
      size_t i = mix64(keys[j]) & mask_;
      while (keys_[i] != kEmpty) i = (i + 1) & mask_;
      keys_[i] = keys[j];
      values_[i] = values[j];
    }
  }

  std::vector<uint64_t> keys_;
  std::vector<Value> values_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace ganpo::text
