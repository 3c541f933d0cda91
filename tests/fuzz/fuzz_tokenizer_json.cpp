// tokenizer.json files of Hugging Face model folders, and the text they tokenize: the input is a
// tokenizer.json, then optionally "\n@@text@@\n" and a text to encode and decode again. Anything
// is either a working tokenizer or refused with a ModelFileError; encoding never crashes.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "core/text/hf_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t cut = input.find("\n@@text@@\n");
  const std::string json = input.substr(0, cut);
  const std::string text = cut == std::string::npos ? "Hello, world! 123" : input.substr(cut + 10);
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("ganpo-fuzz-tokenizer-" + std::to_string(::getpid()) + ".json")).string();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << json;
  }
  std::unique_ptr<ganpo::HfTokenizer> tok;
  try {
    tok = ganpo::HfTokenizer::from_files(path);
  } catch (const ganpo::Error&) {
    return 0;
  }
  try {
    const auto ids = tok->encode(text, /*add_special_tokens=*/true);
    tok->decode(ids);
    auto stream = tok->incremental_decoder();
    for (int64_t id : ids) stream.push(id);
    stream.finish();
  } catch (const ganpo::Error&) {
  }
  return 0;
}
