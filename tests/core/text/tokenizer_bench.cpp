// Encoding speed of HfTokenizer on one thread, in MB of text per second.
//
// Usage: tokenizer_bench TOKENIZER_FOLDER TEXT_FILE [CHUNK_BYTES] [ROUNDS]
// The text is cut into chunks of about CHUNK_BYTES (default 65536, cut after a newline) and each
// chunk is encoded without special tokens, as bench_tokenizer_hf.js does with Hugging Face's
// tokenizers, so the two figures compare. Prints the best of ROUNDS (default 3) rounds, the
// first round (cold word cache) and the number of tokens with a checksum of the ids, which must
// match the other program's. packaging/bench-tokenizer.sh runs both.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/text/hf_tokenizer.h"

namespace {

std::vector<std::string> chunks_of(const std::string& text, size_t chunk) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = std::min(text.size(), pos + chunk);
    if (end < text.size()) {
      const size_t nl = text.find('\n', end);
      end = nl == std::string::npos ? text.size() : nl + 1;
    }
    out.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER_FOLDER TEXT_FILE [CHUNK_BYTES] [ROUNDS]\n", argv[0]);
    return 2;
  }
  const size_t chunk = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 65536;
  const int rounds = argc > 4 ? std::atoi(argv[4]) : 3;
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", argv[2]);
    return 2;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  const auto chunks = chunks_of(text, chunk == 0 ? text.size() : chunk);

  try {
    const auto t0 = std::chrono::steady_clock::now();
    auto tok = ganpo::HfTokenizer::from_folder(argv[1]);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    double best = 1e30, first = 0;
    uint64_t count = 0, checksum = 0;
    for (int r = 0; r < std::max(1, rounds); ++r) {
      count = 0;
      checksum = 0;
      const auto start = std::chrono::steady_clock::now();
      for (const auto& c : chunks) {
        const auto ids = tok->encode(c, false);
        count += ids.size();
        for (int64_t id : ids) checksum = checksum * 1000003u + static_cast<uint64_t>(id);
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (r == 0) first = s;
      best = std::min(best, s);
    }
    const double mb = static_cast<double>(text.size()) / 1e6;
    std::printf("ganpo HfTokenizer: %.2f MB/s (best of %d; first round %.2f MB/s), %.2f MB in %zu chunks, "
                "%llu tokens, checksum %llu, load %.2f s\n",
                mb / best, rounds, mb / first, mb, chunks.size(), static_cast<unsigned long long>(count),
                static_cast<unsigned long long>(checksum), load_s);
  } catch (const ganpo::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
