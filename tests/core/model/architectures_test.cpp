// config.json -> ModelShape (core/model/architectures.h) with hostile files: sizes that are
// negative, absurd or overflow, and nesting deeper than any config. Round trips of real configs
// are covered with the model in causal_lm_test.cpp and hf_folder_test.cpp.
#include "core/model/architectures.h"

#include <cstdint>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace ganpo {
namespace {

using nlohmann::json;

json small_config(const std::string& arch) {
  return {{"architectures", {arch}}, {"vocab_size", 320},           {"hidden_size", 64},
          {"intermediate_size", 128}, {"num_hidden_layers", 2},      {"num_attention_heads", 4},
          {"num_key_value_heads", 2}, {"max_position_embeddings", 256}, {"sliding_window", 32}};
}

std::string error_of(const json& config) {
  try {
    read_hf_config(config);
  } catch (const ModelFileError& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted " << config.dump();
  return "";
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(HfConfig, NegativeLayerCountIsRefusedBeforeAnyAllocation) {
  // It used to reach vector::assign(size_t(-1)) and escape as std::length_error
  // (found by tests/fuzz/fuzz_model_config.cpp).
  json c = small_config("MistralForCausalLM");
  c["num_hidden_layers"] = -1;
  const std::string e = error_of(c);
  EXPECT_TRUE(has(e, "\"num_hidden_layers\" is -1") && has(e, "between 1 and")) << e;
  c["num_hidden_layers"] = 1000000000000;
  EXPECT_TRUE(has(error_of(c), "no real model is that large")) << error_of(c);
}

TEST(HfConfig, AbsurdSizesAreRefusedBeforeTheyOverflow) {
  // These sizes made parameter_count() overflow int64 (undefined behaviour, a negative count).
  json c = small_config("LlamaForCausalLM");
  c["vocab_size"] = 4611686018427387904;
  c["hidden_size"] = 4294967296;
  EXPECT_TRUE(has(error_of(c), "\"vocab_size\" is 4611686018427387904")) << error_of(c);
  for (const char* key : {"hidden_size", "intermediate_size", "num_attention_heads", "max_position_embeddings"}) {
    SCOPED_TRACE(key);
    json big = small_config("LlamaForCausalLM");
    big[key] = 9223372036854775807;
    EXPECT_TRUE(has(error_of(big), std::string("\"") + key + "\" is 9223372036854775807")) << error_of(big);
  }
  json unsigned_big = small_config("LlamaForCausalLM");
  unsigned_big["vocab_size"] = 18446744073709551615ULL;
  EXPECT_TRUE(has(error_of(unsigned_big), "too large for any model")) << error_of(unsigned_big);
  // Every size at its bound: accepted only if the total stays sane.
  json huge = small_config("LlamaForCausalLM");
  huge["hidden_size"] = 131072;
  huge["intermediate_size"] = 1048576;
  huge["num_hidden_layers"] = 4096;
  huge["num_attention_heads"] = 1024;
  huge["num_key_value_heads"] = 1024;
  EXPECT_TRUE(has(error_of(huge), "parameters, more than this build loads")) << error_of(huge);
}

// pad_token_id is the embedding's padding_idx as transformers builds nn.Embedding(V, d, pad):
// a negative one counts from the end, one outside the vocabulary or GPT-2's names no row.
TEST(HfConfig, PadTokenIdIsTheEmbeddingsPaddingIdx) {
  json c = small_config("LlamaForCausalLM");
  EXPECT_EQ(read_hf_config(c).padding_idx, -1) << "no pad_token_id";
  c["pad_token_id"] = 7;
  EXPECT_EQ(read_hf_config(c).padding_idx, 7);
  c["pad_token_id"] = -1;
  EXPECT_EQ(read_hf_config(c).padding_idx, 319);
  c["pad_token_id"] = 320;
  EXPECT_EQ(read_hf_config(c).padding_idx, -1);
  c["pad_token_id"] = nullptr;
  EXPECT_EQ(read_hf_config(c).padding_idx, -1);
  json gpt2 = {{"architectures", {"GPT2LMHeadModel"}}, {"vocab_size", 100}, {"n_embd", 64}, {"n_layer", 2},
               {"n_head", 4}, {"n_positions", 128}, {"pad_token_id", 3}};
  EXPECT_EQ(read_hf_config(gpt2).padding_idx, -1) << "GPT-2's embedding has none";
}

// Keys left out take the config class's defaults, as transformers reads the file: Gemma 2's soft
// caps are 50 and 30 unless null turns them off.
TEST(HfConfig, Gemma2SoftCapsDefaultAsGemma2ConfigAndNullTurnsThemOff) {
  json c = small_config("Gemma2ForCausalLM");
  ModelShape s = read_hf_config(c);
  EXPECT_EQ(s.attn_softcap, 50.0);
  EXPECT_EQ(s.final_softcap, 30.0);
  c["attn_logit_softcapping"] = nullptr;
  c["final_logit_softcapping"] = 20.0;
  s = read_hf_config(c);
  EXPECT_EQ(s.attn_softcap, 0.0);
  EXPECT_EQ(s.final_softcap, 20.0);
}

// Mistral's window, and Qwen's where use_sliding_window is on: MistralConfig's and Qwen2Config's
// 4096 where sliding_window is left out (null: none); Qwen's windowed layers from 28 on.
TEST(HfConfig, SlidingWindowsDefaultAsTheConfigClasses) {
  json c = small_config("MistralForCausalLM");
  c.erase("sliding_window");
  EXPECT_EQ(read_hf_config(c).sliding_window, 4096);
  c["sliding_window"] = nullptr;
  EXPECT_EQ(read_hf_config(c).sliding_window, 0);
  json q = small_config("Qwen2ForCausalLM");
  q.erase("sliding_window");
  q["use_sliding_window"] = true;
  q["num_hidden_layers"] = 30;
  const ModelShape s = read_hf_config(q);
  EXPECT_EQ(s.sliding_window, 4096);
  EXPECT_FALSE(s.layer_is_sliding(27));
  EXPECT_TRUE(s.layer_is_sliding(28));
}

// num_key_value_heads left out: each config class's default (read from transformers 5.12:
// LlamaConfig the head count, MistralConfig 8, Qwen2Config and Qwen3Config 32, Gemma2Config 4);
// null: the head count. A default that does not divide the heads is refused as a written one.
TEST(HfConfig, KeyValueHeadsDefaultAsTheConfigClasses) {
  const auto kv_heads_left_out = [](const std::string& arch, int64_t heads) {
    json c = small_config(arch);
    c.erase("num_key_value_heads");
    c["num_attention_heads"] = heads;
    return c;
  };
  EXPECT_EQ(read_hf_config(kv_heads_left_out("LlamaForCausalLM", 4)).n_kv_heads, 4);
  EXPECT_EQ(read_hf_config(kv_heads_left_out("MistralForCausalLM", 16)).n_kv_heads, 8);
  EXPECT_EQ(read_hf_config(kv_heads_left_out("Qwen2ForCausalLM", 32)).n_kv_heads, 32);
  EXPECT_EQ(read_hf_config(kv_heads_left_out("Qwen3ForCausalLM", 64)).n_kv_heads, 32);
  EXPECT_EQ(read_hf_config(kv_heads_left_out("Gemma2ForCausalLM", 8)).n_kv_heads, 4);
  EXPECT_TRUE(has(error_of(kv_heads_left_out("MistralForCausalLM", 4)), "\"num_key_value_heads\" (8) does not divide"))
      << error_of(kv_heads_left_out("MistralForCausalLM", 4));
  json c = kv_heads_left_out("MistralForCausalLM", 4);
  c["num_key_value_heads"] = nullptr;
  EXPECT_EQ(read_hf_config(c).n_kv_heads, 4);
}

// Rotary embedding on part of each head changes what the model computes: refused, not ignored.
TEST(HfConfig, PartialRotaryIsRefused) {
  json c = small_config("LlamaForCausalLM");
  c["partial_rotary_factor"] = 1.0;
  EXPECT_NO_THROW(read_hf_config(c));
  c["partial_rotary_factor"] = 0.5;
  EXPECT_TRUE(has(error_of(c), "\"partial_rotary_factor\" is not 1")) << error_of(c);
  c.erase("partial_rotary_factor");
  c["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}, {"partial_rotary_factor", 0.25}};
  EXPECT_TRUE(has(error_of(c), "\"rope_parameters.partial_rotary_factor\" is not 1")) << error_of(c);
}

TEST(HfConfig, GptSizesAreBoundedToo) {
  json c = {{"architectures", {"GPT2LMHeadModel"}}, {"vocab_size", 100}, {"n_embd", 64}, {"n_layer", 2},
            {"n_head", 4}, {"n_positions", 128}, {"n_inner", -5}};
  EXPECT_TRUE(has(error_of(c), "\"n_inner\" is -5")) << error_of(c);
  c["n_inner"] = nullptr;
  EXPECT_EQ(read_hf_config(c).d_ff, 256);
  c["n_embd"] = 0;
  EXPECT_TRUE(has(error_of(c), "\"n_embd\" is 0")) << error_of(c);
}

TEST(HfConfig, DeepNestingIsRefusedWithoutRecursion) {
  // A config.json with an extra value nested 100000 deep crashed the loader with a stack
  // overflow: the shape keeps the file's text, written with dump(), which recurses per level.
  json c = small_config("LlamaForCausalLM");
  c["quantization_config"] = json::parse(std::string(100000, '[') + std::string(100000, ']'));
  EXPECT_TRUE(has(error_of(c), "more than 64 levels deep")) << error_of(c);
  c["quantization_config"] = json::parse(std::string(20, '[') + std::string(20, ']'));
  EXPECT_EQ(read_hf_config(c).n_layers, 2);
}

}  // namespace
}  // namespace ganpo
