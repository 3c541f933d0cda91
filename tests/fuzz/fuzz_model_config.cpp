// config.json of Hugging Face model folders: the input is the file. Whatever read_hf_config
// accepts has sizes a model can be built from (positive, bounded, heads dividing evenly), a
// parameter count and memory estimate without overflow, and writes back to a config.json that
// reads as the same shape.
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/memory_estimate.h"
#include "core/model/architectures.h"
#include "core/model/model_shape.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ganpo;
  const nlohmann::json config =
      nlohmann::json::parse(std::string(reinterpret_cast<const char*>(data), size), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return 0;
  ModelShape shape;
  try {
    shape = read_hf_config(config);
  } catch (const ModelFileError&) {
    return 0;
  }
  const std::string summary = shape.arch + " vocab " + std::to_string(shape.vocab_size) + " d " +
                              std::to_string(shape.d_model) + " layers " + std::to_string(shape.n_layers);
  if (shape.vocab_size <= 0 || shape.d_model <= 0 || shape.n_layers <= 0 || shape.n_heads <= 0 ||
      shape.n_kv_heads <= 0 || shape.d_ff <= 0 || shape.max_seq_len <= 0 || shape.head_size() <= 0 ||
      shape.n_heads % shape.n_kv_heads != 0 || shape.sliding_window < 0)
    fuzz::invariant_failed("impossible sizes accepted", summary);
  if (!shape.sliding_layers.empty() && static_cast<int64_t>(shape.sliding_layers.size()) != shape.n_layers)
    fuzz::invariant_failed("sliding_layers has not one entry per layer", summary);
  const int64_t parameters = parameter_count(shape);  // UBSan reports any signed overflow
  if (parameters <= 0) fuzz::invariant_failed("non-positive parameter count", summary);
  RunConfig run;
  const MemoryEstimate memory = estimate_training_memory(run, shape);
  if (memory.parameters != parameters || memory.total_bytes < 0)
    fuzz::invariant_failed("memory estimate disagrees with the parameter count", summary);
  try {
    const ModelShape back = read_hf_config(write_hf_config(shape, shape.dtype));
    if (back.vocab_size != shape.vocab_size || back.d_model != shape.d_model || back.n_layers != shape.n_layers ||
        back.n_heads != shape.n_heads || back.n_kv_heads != shape.n_kv_heads || back.d_ff != shape.d_ff ||
        back.max_seq_len != shape.max_seq_len || back.arch != shape.arch)
      fuzz::invariant_failed("config.json written back reads as another shape", summary);
  } catch (const ModelFileError& e) {
    fuzz::invariant_failed("config.json written back does not read", summary + "\n" + e.what());
  }
  return 0;
}
