// What every fuzz target shares: the input as text, and a failed invariant reported with the
// input that broke it before aborting (libFuzzer then saves the input as a crash file).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace ganpo::fuzz {

[[noreturn]] inline void invariant_failed(const char* what, const std::string& detail) {
  std::fprintf(stderr, "invariant failed: %s\n%s\n", what, detail.c_str());
  std::abort();
}

}  // namespace ganpo::fuzz
