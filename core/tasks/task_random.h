// Seeded draws and argument checks for the built-in tasks' generators.
//
// Draws are written out by hand because std::uniform_*_distribution differ between standard libraries,
// and a task's corpora must be identical for a seed everywhere. The modulo bias of a 64-bit draw
// is negligible for the small ranges the tasks use.
#pragma once

#include <cstddef>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace ganpo::tasks {

inline size_t uniform_index(std::mt19937_64& rng, size_t n) { return static_cast<size_t>(rng() % n); }
inline double uniform_unit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }
inline bool bernoulli(std::mt19937_64& rng, double p) { return uniform_unit(rng) < p; }
// An integer in [lo, hi].
inline int64_t uniform_int(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(uniform_index(rng, static_cast<size_t>(hi - lo + 1)));
}

template <typename T>
void shuffle(std::vector<T>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[uniform_index(rng, i)]);
}

// A generator's size argument (what: "lists: number of SFT examples").
inline void check_count(int64_t n, const char* what) {
  if (n < 0) throw ConfigError(std::string(what) + " must be >= 0, got " + std::to_string(n));
}

inline void check_fraction(double p, const char* what) {
  if (!(p >= 0.0 && p <= 1.0)) throw ConfigError(std::string(what) + " must be in [0, 1], got " + std::to_string(p));
}

}  // namespace ganpo::tasks
