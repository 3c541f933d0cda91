#include "core/model/causal_lm.h"

#include <atomic>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/bf16_autocast.h"
#include "core/chunked_logps.h"
#include "core/config.h"
#include "core/cpu_tensor_memory.h"
#include "core/error.h"
#include "core/generate.h"
#include "core/model/architectures.h"
#include "core/model/hf_weights.h"
#include "core/sdpa.h"
#include "tests/support/expect_contains.h"

namespace ganpo {
namespace {

constexpr int64_t kVocab = 259, kBos = 256, kEos = 257, kPad = 258;

ModelShape llama_shape() {
  ModelConfig c;
  c.preset = "";
  c.arch = "llama";
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.max_seq_len = 64;
  return resolve_model_shape(c, kVocab);
}

ModelShape gqa_shape() {
  auto s = llama_shape();
  s.n_kv_heads = 2;
  return s;
}

ModelShape gpt2_shape() {
  ModelConfig c;
  c.preset = "";
  c.arch = "gpt2";
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.max_seq_len = 64;
  return resolve_model_shape(c, kVocab);
}

int64_t numel_sum(CausalLM& m) {
  int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  return n;
}

CausalLM make_model(const ModelShape& s, uint64_t seed = 1) {
  torch::manual_seed(seed);
  CausalLM m(s);
  m->eval();
  return m;
}

std::vector<std::pair<std::string, ModelShape>> all_test_shapes() {
  return {{"llama", llama_shape()}, {"gqa", gqa_shape()}, {"gpt2", gpt2_shape()}};
}

torch::Tensor tokens(const std::vector<std::vector<int64_t>>& rows) {
  const int64_t T = static_cast<int64_t>(rows[0].size());
  auto t = torch::empty({static_cast<int64_t>(rows.size()), T}, torch::kLong);
  for (size_t i = 0; i < rows.size(); ++i)
    for (int64_t j = 0; j < T; ++j) t[static_cast<int64_t>(i)][j] = rows[i][static_cast<size_t>(j)];
  return t;
}

// ---- shapes and parameter counts -----------------------------------------------------------

TEST(ModelShapeTest, ParameterCountMatchesTheModule) {
  ModelConfig tiny;
  tiny.preset = "tiny";
  ModelConfig small;
  small.preset = "small";
  std::vector<std::pair<std::string, ModelShape>> shapes = {
      {"tiny", resolve_model_shape(tiny, kVocab)},
      {"small", resolve_model_shape(small, kVocab)},
      {"gpt2", gpt2_shape()},
      {"gqa", gqa_shape()},
  };
  auto untied = llama_shape();
  untied.tie_embeddings = false;
  shapes.push_back({"llama untied", untied});
  auto gpt2_untied = gpt2_shape();
  gpt2_untied.tie_embeddings = false;
  shapes.push_back({"gpt2 untied", gpt2_untied});
  auto every_norm = untied;  // Qwen 3's q / k norms, Gemma 2's four norms a layer, biases
  every_norm.qk_norm = every_norm.sandwich_norms = every_norm.qkv_bias = every_norm.o_bias = every_norm.mlp_bias = true;
  shapes.push_back({"qk and sandwich norms, biases", every_norm});
  for (auto& [name, s] : shapes) {
    CausalLM m(s);
    EXPECT_EQ(parameter_count(s), numel_sum(m)) << name;
    ParameterParts counted;  // by the modules' names
    for (const auto& p : m->named_parameters()) {
      const std::string& key = p.key();
      const bool embedding = key.rfind("embed_", 0) == 0, norm = key.find("norm.") != std::string::npos;
      (embedding ? counted.embeddings : norm ? counted.norms : counted.projections) += p.value().numel();
    }
    const ParameterParts parts = parameter_parts(s);
    EXPECT_EQ(parts.projections, counted.projections) << name;
    EXPECT_EQ(parts.embeddings, counted.embeddings) << name;
    EXPECT_EQ(parts.norms, counted.norms) << name;
  }
}

TEST(ModelShapeTest, PresetsResolveAsDocumented) {
  ModelConfig c;
  c.preset = "tiny";
  auto s = resolve_model_shape(c, kVocab);
  EXPECT_EQ(s.arch, "llama");
  EXPECT_EQ(s.d_model, 128);
  EXPECT_EQ(s.n_layers, 4);
  EXPECT_EQ(s.vocab_size, kVocab);
  EXPECT_EQ(s.d_ff, 384);  // 8/3 x 128 = 341 rounded up to 64
  EXPECT_EQ(gqa_shape().n_kv_heads, 2);
  EXPECT_EQ(gpt2_shape().d_ff, 128);  // 4 x d
  // A GQA override survives resolution.
  ModelConfig g;
  g.preset = "tiny";
  g.n_heads = 4;
  g.n_kv_heads = 2;
  EXPECT_EQ(resolve_model_shape(g, kVocab).n_kv_heads, 2);
}

TEST(ModelShapeTest, JsonRoundTripAndBadFields) {
  for (auto& [name, s] : all_test_shapes()) {
    auto back = read_hf_config(write_hf_config(s));
    EXPECT_EQ(back.arch, s.arch) << name;
    EXPECT_EQ(back.d_model, s.d_model) << name;
    EXPECT_EQ(back.n_layers, s.n_layers) << name;
    EXPECT_EQ(back.n_heads, s.n_heads) << name;
    EXPECT_EQ(back.n_kv_heads, s.n_kv_heads) << name;
    EXPECT_EQ(back.d_ff, s.d_ff) << name;
    EXPECT_EQ(back.max_seq_len, s.max_seq_len) << name;
    EXPECT_EQ(back.vocab_size, s.vocab_size) << name;
    EXPECT_EQ(back.tie_embeddings, s.tie_embeddings) << name;
  }
  auto j = write_hf_config(llama_shape());
  auto bad_type = j;
  bad_type["architectures"] = {"MambaForCausalLM"};
  bad_type["model_type"] = "mamba";
  EXPECT_THROW(read_hf_config(bad_type), ModelFileError);
  auto missing = j;
  missing.erase("hidden_size");
  EXPECT_THROW(read_hf_config(missing), ModelFileError);
  auto wrong_type = j;
  wrong_type["num_hidden_layers"] = "two";
  EXPECT_THROW(read_hf_config(wrong_type), ModelFileError);
  auto impossible = j;
  impossible["num_attention_heads"] = 5;  // 32 % 5 != 0
  EXPECT_THROW(read_hf_config(impossible), ModelFileError);
}

TEST(ModelForward, OutputShapes) {
  for (auto& [name, s] : all_test_shapes()) {
    auto m = make_model(s);
    auto ids = torch::randint(0, kVocab, {3, 9}, torch::kLong);
    auto out = m->forward(ids);
    EXPECT_EQ(out.logits.sizes(), torch::IntArrayRef({3, 9, kVocab})) << name;
    EXPECT_EQ(out.hidden.sizes(), torch::IntArrayRef({3, 9, 32})) << name;
    EXPECT_TRUE(torch::isfinite(out.logits).all().item<bool>()) << name;
  }
}

TEST(ModelForward, TiedLogitsAreHiddenTimesEmbedding) {
  auto m = make_model(llama_shape());
  auto ids = torch::randint(0, kVocab, {2, 5}, torch::kLong);
  auto out = m->forward(ids);
  torch::Tensor embed;
  for (const auto& p : m->named_parameters())
    if (p.key() == "embed_tokens.weight") embed = p.value();
  ASSERT_TRUE(embed.defined());
  EXPECT_TRUE(torch::allclose(out.logits, torch::matmul(out.hidden, embed.t()), 1e-5, 1e-6));
}

// A Hugging Face folder's pad_token_id is its embedding's padding_idx: the pad token's row gets
// no gradient from the lookup (a tied head still trains it, as in transformers); without one,
// every looked-up row does.
TEST(ModelForward, ThePadTokensEmbeddingRowGetsNoGradientFromTheLookup) {
  const auto ids = tokens({{5, kPad, 9, 5}, {kPad, 7, 7, kPad}});
  auto embedding_grad = [&](ModelShape s) {
    auto m = make_model(s);
    m->train();
    m->forward(ids).logits.logsumexp(-1).mean().backward();
    for (const auto& p : m->named_parameters())
      if (p.key() == "embed_tokens.weight") return p.value().grad();
    return torch::Tensor();
  };
  auto untied = llama_shape();
  untied.tie_embeddings = false;
  untied.padding_idx = kPad;
  const auto grad = embedding_grad(untied);
  ASSERT_TRUE(grad.defined());
  EXPECT_EQ(grad[kPad].abs().sum().item<double>(), 0.0);
  EXPECT_GT(grad[5].abs().sum().item<double>(), 0);
  untied.padding_idx = -1;
  EXPECT_GT(embedding_grad(untied)[kPad].abs().sum().item<double>(), 0) << "no padding_idx: the row trains";
  auto tied = llama_shape();
  tied.padding_idx = kPad;
  EXPECT_GT(embedding_grad(tied)[kPad].abs().sum().item<double>(), 0) << "the tied head's use trains it";
  // A new model starts the row at zero, as transformers' _init_weights (from_config).
  const auto fresh = make_model(tied)->named_parameters()["embed_tokens.weight"];
  EXPECT_EQ(fresh[kPad].abs().sum().item<double>(), 0.0);
  EXPECT_GT(fresh[5].abs().sum().item<double>(), 0);
}

TEST(ModelForward, LogitsFromAPositionAreTheTailOfTheFullLogits) {
  for (auto& [name, s] : all_test_shapes()) {
    auto m = make_model(s);
    torch::NoGradGuard guard;
    auto ids = torch::randint(0, kVocab, {2, 10}, torch::kLong);
    auto full = m->forward(ids);
    for (int64_t from : {0, 1, 6, 9}) {
      auto part = m->forward_from(ids, from);
      EXPECT_EQ(part.logits_from, from) << name;
      EXPECT_EQ(part.logits.sizes(), torch::IntArrayRef({2, 10 - from, kVocab})) << name;
      EXPECT_TRUE(torch::equal(part.hidden, full.hidden)) << name << " from " << from;
      EXPECT_TRUE(torch::allclose(part.logits, full.logits.slice(1, from), 1e-6, 1e-6)) << name << " from " << from;
    }
    // Out of range asks are clamped; from T on, the hidden states alone (no output head).
    EXPECT_EQ(m->forward_from(ids, -3).logits_from, 0) << name;
    const auto headless = m->forward_from(ids, 50);
    EXPECT_EQ(headless.logits_from, 10) << name;
    EXPECT_EQ(headless.logits.size(1), 0) << name;
    EXPECT_TRUE(torch::equal(headless.hidden, full.hidden)) << name;
  }
}

TEST(ModelForward, TooLongSequenceThrows) {
  auto m = make_model(llama_shape());
  EXPECT_THROW(m->forward(torch::zeros({1, 65}, torch::kLong)), Error);
}

// Gradient checkpointing recomputes each block in the backward pass: the loss and every gradient
// are those of the plain backward pass, for each family, with LoRA adapters whose dropout draws
// random numbers (the recomputation replays them), and the generator ends where it would have;
// LoRA on the last layer only (the blocks below keep nothing); also with DoRA on every projection
// (GPT-2's q, k and v then on c_attn's one A and one dropout).
TEST(ModelForward, GradientCheckpointingGivesTheSameLossAndGradients) {
  for (const auto& [name, shape] : all_test_shapes()) {
    for (const char* adapters : {"", "LoRA", "DoRA"}) {
      const bool lora = *adapters != '\0';
      SCOPED_TRACE(name + " " + adapters);
      auto gradients = [&, shape = shape](bool checkpointing, double* loss_out, torch::Tensor* rng_after) {
        CausalLM m = make_model(shape, 21);
        if (lora) {
          LoraSpec spec;
          spec.r = 4;
          spec.alpha = 8;
          spec.dropout = 0.25;
          spec.targets = {"q_proj", "v_proj", "up_proj", "down_proj"};
          if (std::string(adapters) == "DoRA") {
            spec.targets = {"all-linear"};
            spec.dora = true;
          } else if (shape.n_layers > 1) {
            spec.layers = {shape.n_layers - 1};  // the blocks below run plainly, outside the backward pass
          }
          m->add_lora(spec);
          torch::NoGradGuard guard;
          for (auto& [n, t] : m->adapter_parameters())
            if (n.find("lora_B") != std::string::npos) t.normal_(0.0, 0.1);
        }
        m->set_gradient_checkpointing(checkpointing);
        m->train();
        torch::manual_seed(99);
        const auto ids = torch::randint(0, 256, {2, 16}, torch::kLong);
        auto loss = torch::nn::functional::cross_entropy(m->forward(ids).logits.reshape({-1, kVocab}), ids.reshape({-1}));
        loss.backward();
        *loss_out = loss.item<double>();
        *rng_after = at::detail::getDefaultCPUGenerator().get_state();
        std::map<std::string, torch::Tensor> out;
        for (const auto& p : m->named_parameters())
          if (p.value().grad().defined()) out[p.key()] = p.value().grad().clone();
        return out;
      };
      double plain_loss = 0, checkpointed_loss = 0;
      torch::Tensor plain_rng, checkpointed_rng;
      const auto plain = gradients(false, &plain_loss, &plain_rng);
      const auto checkpointed = gradients(true, &checkpointed_loss, &checkpointed_rng);
      EXPECT_DOUBLE_EQ(plain_loss, checkpointed_loss);
      EXPECT_TRUE(torch::equal(plain_rng, checkpointed_rng)) << "the generator continues as without recomputation";
      ASSERT_EQ(plain.size(), checkpointed.size());
      ASSERT_FALSE(plain.empty());
      for (const auto& [key, g] : plain) {
        ASSERT_TRUE(checkpointed.count(key)) << key;
        EXPECT_TRUE(torch::allclose(checkpointed.at(key), g, 1e-5, 1e-7)) << key;
      }
    }
  }
}

TEST(ModelForward, IsCausal) {
  for (auto& [name, s] : all_test_shapes()) {
    auto m = make_model(s);
    torch::NoGradGuard guard;
    auto ids = torch::randint(0, 256, {2, 12}, torch::kLong);
    auto changed = ids.clone();
    changed[0][7] = (ids[0][7].item<int64_t>() + 1) % 256;
    changed[1][11] = (ids[1][11].item<int64_t>() + 5) % 256;
    auto a = m->forward(ids), b = m->forward(changed);
    EXPECT_TRUE(torch::allclose(a.logits[0].slice(0, 0, 7), b.logits[0].slice(0, 0, 7), 1e-5, 1e-6)) << name;
    EXPECT_TRUE(torch::allclose(a.hidden[1].slice(0, 0, 11), b.hidden[1].slice(0, 0, 11), 1e-5, 1e-6)) << name;
    EXPECT_FALSE(torch::allclose(a.logits[0].slice(0, 7), b.logits[0].slice(0, 7), 1e-5, 1e-6)) << name;
  }
}

// Passes of 128 queries and more take attention by blocks of queries (no scores above the
// diagonal blocks); passes of fewer take the full masked product. A 200-token forward, the same
// with an explicit key mask, and one continued from a 20-token cache (blocks with a mask and a
// past) against the same rows run 40 tokens at a time through a cache (the full product):
// same logits, same gradients, for lengths that do not split evenly.
TEST(ModelForward, AttentionByQueryBlocksEqualsTheFullProduct) {
  for (auto& [name, shape] : all_test_shapes()) {
    SCOPED_TRACE(name);
    auto s = shape;
    s.max_seq_len = 256;
    auto m = make_model(s, 4);
    torch::manual_seed(8);
    const auto ids = torch::randint(0, 256, {2, 200}, torch::kLong);
    auto grads_of = [&](const torch::Tensor& logits) {
      logits.pow(2).mean().backward();
      std::vector<torch::Tensor> g;
      for (auto& p : m->parameters()) g.push_back(p.grad().clone()), p.mutable_grad().zero_();
      return g;
    };
    auto chunked = [&](int64_t first) {  // `first` tokens, then the rest in pieces of 40 through the cache
      KVCache cache;
      std::vector<torch::Tensor> parts;
      for (int64_t at = 0; at < 200;) {
        const int64_t n = at == 0 ? first : std::min<int64_t>(40, 200 - at);
        parts.push_back(m->forward(ids.slice(1, at, at + n), {}, {}, &cache).logits);
        at += n;
      }
      return torch::cat(parts, 1);
    };
    const auto reference = chunked(40);
    const auto reference_grads = grads_of(reference);
    const auto blocked = m->forward(ids).logits;
    const auto masked = m->forward(ids, {}, torch::ones({2, 200}, torch::kLong)).logits;
    KVCache cache;
    const auto head = m->forward(ids.slice(1, 0, 20), {}, {}, &cache).logits;
    const auto continued = torch::cat({head, m->forward(ids.slice(1, 20), {}, {}, &cache).logits}, 1);
    for (const auto& [variant, logits] : {std::pair<const char*, torch::Tensor>{"plain", blocked}, {"key mask", masked},
                                          {"after a cache", continued}}) {
      EXPECT_TRUE(torch::allclose(logits, reference, 1e-5, 1e-5)) << variant;
      const auto g = grads_of(logits);
      for (size_t i = 0; i < g.size(); ++i)
        EXPECT_TRUE(torch::allclose(g[i], reference_grads[i], 1e-4, 1e-6)) << variant << ", parameter " << i;
    }
  }
}

// The run log's line on attention names what this build computes: the fused kernels where
// LibTorch has them (core/sdpa.h), the explicit softmax where a model soft-caps its scores.
TEST(ModelForward, AttentionKernelNoteNamesWhatThisBuildUses) {
  auto s = all_test_shapes().front().second;
  s.attn_softcap = 0.0;
  EXPECT_CONTAINS(attention_kernel_note(s), GANPO_HAVE_SDPA ? "scaled_dot_product_attention (LibTorch "
                                                            : "explicit softmax by blocks of causal queries");
  s.attn_softcap = 50.0;
  EXPECT_CONTAINS(attention_kernel_note(s), "soft-caps its attention scores (attn_logit_softcapping 50)");
}

TEST(ModelForward, KvCacheMatchesFullForward) {
  for (auto& [name, s] : all_test_shapes()) {
    auto m = make_model(s);
    torch::NoGradGuard guard;
    auto ids = torch::randint(0, 256, {2, 14}, torch::kLong);
    auto full = m->forward(ids).logits;
    KVCache cache;
    auto prefill = m->forward(ids.slice(1, 0, 8), {}, {}, &cache).logits;
    EXPECT_EQ(cache.length(), 8) << name;
    EXPECT_TRUE(torch::allclose(prefill, full.slice(1, 0, 8), 1e-4, 1e-4)) << name;
    // Two tokens at once, then one at a time.
    auto two = m->forward(ids.slice(1, 8, 10), {}, {}, &cache).logits;
    EXPECT_TRUE(torch::allclose(two, full.slice(1, 8, 10), 1e-4, 1e-4)) << name;
    torch::Tensor last;
    for (int64_t t = 10; t < 14; ++t) {
      last = m->forward(ids.slice(1, t, t + 1), {}, {}, &cache).logits;
      EXPECT_TRUE(torch::allclose(last.select(1, 0), full.select(1, t), 1e-4, 1e-4)) << name << " t=" << t;
    }
    EXPECT_EQ(cache.length(), 14) << name;
    EXPECT_LT((last.select(1, 0) - full.select(1, 13)).abs().max().item<double>(), 1e-4) << name;
  }
}

TEST(ModelForward, LeftPaddingWithKeyMaskAndPositionsMatchesUnpadded) {
  for (auto& [name, s] : all_test_shapes()) {
    auto m = make_model(s);
    torch::NoGradGuard guard;
    const std::vector<int64_t> short_row = {kBos, 10, 20, 30, 40, 50};
    const std::vector<int64_t> long_row = {kBos, 1, 2, 3, 4, 5, 6, 7, 8};
    const int64_t pad = static_cast<int64_t>(long_row.size() - short_row.size());
    std::vector<int64_t> padded(static_cast<size_t>(pad), kPad);
    padded.insert(padded.end(), short_row.begin(), short_row.end());
    auto ids = tokens({padded, long_row});
    auto key_mask = torch::ones({2, 9}, torch::kLong);
    key_mask[0].slice(0, 0, pad).fill_(0);
    auto positions = (key_mask.cumsum(1) - 1).clamp_min(0);
    auto out = m->forward(ids, positions, key_mask).logits;

    auto alone_short = m->forward(tokens({short_row})).logits;
    auto alone_long = m->forward(tokens({long_row})).logits;
    EXPECT_LT((out[0][-1] - alone_short[0][-1]).abs().max().item<double>(), 1e-4) << name;
    EXPECT_LT((out[1][-1] - alone_long[0][-1]).abs().max().item<double>(), 1e-4) << name;
    // Every real position of the padded row matches, not only the last.
    EXPECT_TRUE(torch::allclose(out[0].slice(0, pad), alone_short[0], 1e-4, 1e-4)) << name;

    // Continuing the padded batch with the cache stays consistent.
    KVCache cache;
    m->forward(ids, positions, key_mask, &cache);
    auto next = tokens({{60}, {9}});
    auto keys = torch::cat({key_mask, torch::ones({2, 1}, torch::kLong)}, 1);
    auto next_pos = positions.select(1, 8).unsqueeze(1) + 1;
    auto step = m->forward(next, next_pos, keys, &cache).logits;
    std::vector<int64_t> short_next = short_row, long_next = long_row;
    short_next.push_back(60);
    long_next.push_back(9);
    EXPECT_LT((step[0][0] - m->forward(tokens({short_next})).logits[0][-1]).abs().max().item<double>(), 1e-4)
        << name;
    EXPECT_LT((step[1][0] - m->forward(tokens({long_next})).logits[0][-1]).abs().max().item<double>(), 1e-4)
        << name;
  }
}

// A frozen model kept for bf16 autocast (the reference under train.precision = "bf16") stores its
// projections in bf16 and nothing else; outside autocast it gives exactly the numbers of the
// float32 model with those weights rounded to bf16 (the plain and the chunked head, decoding
// from a cache). Under CUDA's autocast it gives the float32 model's numbers
// (Cuda.ReferenceProjectionsInBf16GiveTheAutocastNumbers).
TEST(ModelForward, ProjectionsStoredInBf16AreTheRoundedModel) {
  auto untied = llama_shape();
  untied.tie_embeddings = false;
  untied.qkv_bias = true;
  for (auto& [name, s] : std::vector<std::pair<std::string, ModelShape>>{{"gpt2 (tied)", gpt2_shape()}, {"llama untied", untied}}) {
    SCOPED_TRACE(name);
    auto stored = make_model(s, 3), rounded = make_model(s, 3);
    std::set<std::string> round;
    {
      torch::NoGradGuard guard;
      for (auto& p : rounded->named_parameters())
        if (p.key().find("_proj.") != std::string::npos || p.key().rfind("lm_head.", 0) == 0) {
          p.value().copy_(p.value().to(torch::kBFloat16).to(torch::kFloat32));
          round.insert(p.key());
        }
    }
    for (auto& p : stored->parameters()) p.requires_grad_(false);
    EXPECT_EQ(stored->store_projections_in_bf16(false), parameter_parts(s).projections);
    for (const auto& p : stored->named_parameters())
      EXPECT_EQ(p.value().scalar_type(), round.count(p.key()) ? torch::kBFloat16 : torch::kFloat32) << p.key();
    EXPECT_EQ(stored->named_parameters()["layers.0.self_attn.q_proj.bias"].scalar_type(),
              s.qkv_bias ? torch::kBFloat16 : torch::kFloat32);

    const auto ids = tokens({{kBos, 5, 9, 77, 3, 120, 4}, {kBos, 6, 6, 200, 31, 2, 8}});
    torch::NoGradGuard guard;
    const LMOutput a = stored->forward(ids), b = rounded->forward(ids);
    EXPECT_TRUE(torch::equal(a.logits, b.logits));
    EXPECT_TRUE(torch::equal(a.hidden, b.hidden));
    EXPECT_EQ(a.logits.scalar_type(), torch::kFloat32);
    const auto h = a.hidden.reshape({-1, s.d_model});
    const auto targets = ids.roll(-1, 1).reshape({-1});
    EXPECT_TRUE(torch::equal(chunked_token_logps(h, stored->head_weight(), targets, 0.0, 5),
                             chunked_token_logps(h, rounded->head_weight(), targets, 0.0, 5)));
    SamplingOptions greedy;
    greedy.temperature = 0;
    greedy.max_new_tokens = 6;
    const std::vector<std::vector<int64_t>> prompts = {{kBos, 5, 9}, {kBos, 7}};
    EXPECT_EQ(generate(stored, prompts, greedy, kEos, kPad), generate(rounded, prompts, greedy, kEos, kPad));
  }
  auto adapted = make_model(llama_shape());
  LoraSpec spec;
  spec.r = 2;
  spec.targets = {"q_proj"};
  adapted->add_lora(spec);
  EXPECT_THROW(adapted->store_projections_in_bf16(false), std::logic_error) << "not for a model with adapters";
}

// ---- model_state / load_model_state --------------------------------------------------------

std::map<std::string, torch::Tensor> state_map(CausalLM& m) {
  std::map<std::string, torch::Tensor> out;
  for (auto& [k, v] : model_state(m)) out[k] = v.clone();
  return out;
}

TEST(ModelState, NamesFollowHfLlama) {
  auto untied = llama_shape();
  untied.tie_embeddings = false;
  auto m = make_model(untied);
  auto st = state_map(m);
  for (const std::string key :
       {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight", "model.norm.weight",
        "lm_head.weight"})
    EXPECT_EQ(st.count(key), 1u) << key;
  EXPECT_EQ(st.count("model.lm_head.weight"), 0u);
  for (const auto& [k, v] : st) EXPECT_EQ(k.find("rope"), std::string::npos) << k;  // buffers are not saved
  EXPECT_EQ(st.size(), m->parameters().size());
}

TEST(ModelState, RoundTripGivesIdenticalLogits) {
  for (auto& [name, s] : all_test_shapes()) {
    auto a = make_model(s, 1);
    auto b = make_model(s, 2);
    auto ids = torch::randint(0, 256, {2, 7}, torch::kLong);
    torch::NoGradGuard guard;
    ASSERT_FALSE(torch::equal(a->forward(ids).logits, b->forward(ids).logits)) << name;
    load_model_state(b, state_map(a), "test");
    EXPECT_TRUE(torch::equal(a->forward(ids).logits, b->forward(ids).logits)) << name;
  }
}

TEST(ModelState, MisShapedOrMissingTensorThrowsModelFileError) {
  auto m = make_model(llama_shape());
  auto st = state_map(m);
  auto bad = st;
  bad["model.layers.0.self_attn.q_proj.weight"] = torch::zeros({3, 3});
  try {
    load_model_state(m, bad, "weights.safetensors");
    FAIL() << "no throw";
  } catch (const ModelFileError& e) {
    EXPECT_NE(std::string(e.what()).find("q_proj"), std::string::npos) << e.what();
  }
  auto missing = st;
  missing.erase("model.norm.weight");
  EXPECT_THROW(load_model_state(m, missing, "weights.safetensors"), ModelFileError);
  // A GQA model does not load dense k_proj weights.
  auto g = make_model(gqa_shape());
  EXPECT_THROW(load_model_state(g, st, "dense"), ModelFileError);
}

// ---- generate ------------------------------------------------------------------------------

// Greedy decoding one prompt at a time with full forwards (no cache, no padding).
std::vector<int64_t> manual_greedy(CausalLM& m, std::vector<int64_t> seq, int64_t max_new, int64_t eos) {
  torch::NoGradGuard guard;
  std::vector<int64_t> out;
  for (int64_t i = 0; i < max_new; ++i) {
    auto logits = m->forward(tokens({seq})).logits[0][-1];
    const int64_t next = logits.argmax().item<int64_t>();
    if (next == eos) break;
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

const std::vector<std::vector<int64_t>> kPrompts = {{kBos, 72, 105, 10}, {kBos, 65, 66, 67, 68, 69, 70, 10}, {kBos, 10}};

// Makes a gpt2 model's learned positions dominate its input, so that any position error
// (e.g. positions not shifted for left padding) changes the greedy tokens. Llama's RoPE is
// relative, so a constant shift of all positions is invisible to it by design.
void amplify_positions(CausalLM& m) {
  torch::NoGradGuard guard;
  for (auto& p : m->named_parameters())
    if (p.key() == "embed_positions.weight") p.value().mul_(30.0);
}

TEST(ModelGenerate, GreedyEqualsManualLoop) {
  for (auto& [name, s] : all_test_shapes()) {
    auto m = make_model(s, 3);
    amplify_positions(m);
    SamplingOptions opt;
    opt.temperature = 0.0;
    opt.max_new_tokens = 10;
    auto got = generate(m, kPrompts, opt, kEos, kPad);
    ASSERT_EQ(got.size(), kPrompts.size());
    for (size_t i = 0; i < kPrompts.size(); ++i)
      EXPECT_EQ(got[i], manual_greedy(m, kPrompts[i], 10, kEos)) << name << " row " << i;
  }
}

TEST(ModelGenerate, RestoresTrainingMode) {
  auto m = make_model(llama_shape());
  m->train();
  SamplingOptions opt;
  opt.max_new_tokens = 2;
  generate(m, kPrompts, opt, kEos, kPad);
  EXPECT_TRUE(m->is_training());
  m->eval();
  generate(m, kPrompts, opt, kEos, kPad);
  EXPECT_FALSE(m->is_training());
  // However it returns: with no prompt, and on an error (here a token outside the vocabulary).
  m->train();
  EXPECT_TRUE(generate(m, {}, opt, kEos, kPad).empty());
  EXPECT_TRUE(m->is_training());
  EXPECT_ANY_THROW(generate(m, {{int64_t{1} << 40}}, opt, kEos, kPad));
  EXPECT_TRUE(m->is_training());
}

// bf16_autocast turns CUDA's bf16 autocast on for the decoding thread while generate runs (the
// products of a model on a GPU; tests/core/gpu/cuda_test.cpp decodes so) and off again after,
// with autocast's cast cache on unless cache_casts is off; the CPU's numbers do not change.
TEST(ModelGenerate, Bf16AutocastIsOnWhileDecodingOnlyAndChangesNothingOnTheCpu) {
  auto m = make_model(llama_shape(), 4);
  const bool cache_before = at::autocast::is_autocast_cache_enabled();
  struct Case { bool autocast, cache_casts; };
  for (const Case c : {Case{false, true}, Case{true, true}, Case{true, false}}) {
    SCOPED_TRACE(std::string(c.autocast ? "bf16 autocast" : "float32") + (c.cache_casts ? ", casts cached" : ""));
    SamplingOptions opt;
    opt.temperature = 0.0;
    opt.max_new_tokens = 6;
    opt.bf16_autocast = c.autocast;
    opt.cache_casts = c.cache_casts;
    std::vector<bool> autocast_seen, cache_seen;
    const auto got = generate(m, kPrompts, opt, kEos, kPad, nullptr, [&](int64_t, const std::vector<int64_t>&) {
      autocast_seen.push_back(cuda_autocast_enabled());
      cache_seen.push_back(at::autocast::is_autocast_cache_enabled());
    });
    ASSERT_FALSE(autocast_seen.empty());
    EXPECT_EQ(autocast_seen, std::vector<bool>(autocast_seen.size(), c.autocast));
    if (c.autocast) {
      EXPECT_EQ(cache_seen, std::vector<bool>(cache_seen.size(), c.cache_casts));
    }
    EXPECT_FALSE(cuda_autocast_enabled());
    EXPECT_EQ(at::autocast::is_autocast_cache_enabled(), cache_before);
    for (size_t i = 0; i < kPrompts.size(); ++i) EXPECT_EQ(got[i], manual_greedy(m, kPrompts[i], 6, kEos)) << "row " << i;
  }
}

// What the CUDA test Cuda.Bf16DecodingReadsWeightsStoredInBf16AsTheyAre checks of the numbers, in
// bf16 arithmetic on the CPU (the testing aid Bf16OnCpuForTests): a model whose projections are
// stored in bf16 decodes under autocast exactly as its float32 twin does (autocast rounds the
// twin's weights to those values per product), with the twin's casts cached per call or not; and
// the rounding is real: the logits are not float32 decoding's.
TEST(ModelGenerate, UnderBf16ArithmeticProjectionsStoredInBf16DecodeAsTheirFloat32Twin) {
  const Bf16OnCpuForTests bf16_products;
  for (const ModelShape& s : {llama_shape(), gpt2_shape()}) {
    SCOPED_TRACE(s.arch);
    auto twin = make_model(s, 6), stored = make_model(s, 6);
    for (auto& p : stored->parameters()) p.requires_grad_(false);
    ASSERT_EQ(stored->store_projections_in_bf16(/*exact_only=*/false), parameter_parts(s).projections);
    SamplingOptions opt;
    opt.temperature = 0.0;
    opt.max_new_tokens = 8;
    opt.bf16_autocast = true;
    const auto expected = generate(stored, kPrompts, opt, -1, kPad);
    for (const bool cache : {true, false}) {
      opt.cache_casts = cache;
      EXPECT_EQ(generate(twin, kPrompts, opt, -1, kPad), expected) << (cache ? "casts cached" : "cast per product");
    }
    const auto ids = tokens({{kBos, 5, 9, 77, 3, 120, 4}});
    torch::NoGradGuard no_grad;
    const auto plain = twin->forward(ids).logits;
    const Bf16Autocast autocast(true);
    const auto a = twin->forward(ids).logits, b = stored->forward(ids).logits;
    EXPECT_EQ(a.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(a, b));
    EXPECT_FALSE(torch::equal(a.to(torch::kFloat32), plain)) << "the products did not round";
    EXPECT_TRUE(torch::allclose(a.to(torch::kFloat32), plain, 0.05, 0.05));
  }
}

// The cast cache, measured in bf16 arithmetic on the CPU as Cuda.Bf16DecodingReadsWeights...
// measures it on a GPU (the CPU's autocast caches the same way): decoding a trainable float32
// model with cache_casts holds one bf16 copy of every projection (2 bytes per value) until the
// call returns, and none after it; without the cache each product's copy is freed after it.
TEST(ModelGenerate, UnderBf16ArithmeticCachedCastsAreOneCopyOfEachWeightPerCall) {
  count_cpu_tensor_memory();
  const Bf16OnCpuForTests bf16_products;
  ModelShape s = llama_shape();
  s.d_model = 256;
  s.d_ff = 512;
  s.tie_embeddings = false;  // the head is a projection of its own
  auto m = make_model(s, 7);
  for (const auto& p : m->parameters()) ASSERT_TRUE(p.requires_grad());
  const int64_t copies = 2 * parameter_parts(s).projections;  // bytes
  SamplingOptions opt;
  opt.temperature = 0.0;
  opt.max_new_tokens = 4;
  opt.bf16_autocast = true;
  auto extra_peak = [&](bool cache) {
    opt.cache_casts = cache;
    const int64_t before = cpu_tensor_memory().allocated_bytes;
    reset_cpu_tensor_peak();
    generate(m, kPrompts, opt, -1, kPad);
    EXPECT_EQ(cpu_tensor_memory().allocated_bytes, before) << "a copy outlived the call";
    return cpu_tensor_memory().peak_bytes - before;
  };
  const int64_t cached = extra_peak(true), per_product = extra_peak(false);
  EXPECT_GE(cached, copies);
  EXPECT_LT(per_product, copies / 2);
  EXPECT_GE(cached - per_product, copies / 2);
  RecordProperty("copies_bytes", std::to_string(copies));
  RecordProperty("extra_peak_cached_bytes", std::to_string(cached));
  RecordProperty("extra_peak_per_product_bytes", std::to_string(per_product));
}

TEST(ModelGenerate, SeedsControlSampling) {
  auto m = make_model(llama_shape(), 4);
  SamplingOptions opt;
  opt.temperature = 1.0;
  opt.max_new_tokens = 16;
  opt.seed = 123;
  auto a = generate(m, kPrompts, opt, -1, kPad);
  auto b = generate(m, kPrompts, opt, -1, kPad);
  EXPECT_EQ(a, b);
  opt.seed = 124;
  auto c = generate(m, kPrompts, opt, -1, kPad);
  EXPECT_NE(a, c);
  for (const auto& row : a) EXPECT_EQ(row.size(), 16u);
  // The global torch RNG does not influence the draws.
  opt.seed = 123;
  torch::manual_seed(999);
  EXPECT_EQ(generate(m, kPrompts, opt, -1, kPad), a);
}

// A prompt's sample is drawn from a generator of its own (the seed and its number), so it is the
// same alone, in a batch, in another order or beside other prompts: what `ganpo generate
// --batch-size`, the judge's batches and the trainer's ranks rely on.
TEST(ModelGenerate, APromptsSampleDoesNotDependOnItsBatch) {
  auto m = make_model(llama_shape(), 4);
  SamplingOptions opt;
  opt.temperature = 1.0;
  opt.top_k = 20;
  opt.max_new_tokens = 10;
  opt.seed = 77;
  const auto batch = generate(m, kPrompts, opt, -1, kPad);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    SamplingOptions alone = opt;
    alone.prompt_numbers = {static_cast<int64_t>(i)};
    EXPECT_EQ(generate(m, {kPrompts[i]}, alone, -1, kPad).front(), batch[i]) << "prompt " << i << " alone";
  }
  SamplingOptions reversed = opt;
  reversed.prompt_numbers = {2, 1, 0};
  const auto back = generate(m, {kPrompts[2], kPrompts[1], kPrompts[0]}, reversed, -1, kPad);
  EXPECT_EQ(back, (std::vector<std::vector<int64_t>>{batch[2], batch[1], batch[0]}));
  // The number, not the text, picks the stream: one prompt twice draws two samples.
  const auto twice = generate(m, {kPrompts[0], kPrompts[0]}, opt, -1, kPad);
  EXPECT_EQ(twice[0], batch[0]);
  EXPECT_NE(twice[1], twice[0]);
  EXPECT_NE(sample_seed(77, 0), sample_seed(77, 1));
  EXPECT_NE(sample_seed(77, 0), sample_seed(78, 0));
  SamplingOptions wrong = opt;
  wrong.prompt_numbers = {0};
  EXPECT_THROW(generate(m, kPrompts, wrong, -1, kPad), Error);
}

size_t stopped_length(const std::vector<int64_t>& free_row, int64_t eos) {
  return static_cast<size_t>(std::find(free_row.begin(), free_row.end(), eos) - free_row.begin());
}

TEST(ModelGenerate, StopsAtEosPerRow) {
  auto m = make_model(llama_shape(), 5);
  SamplingOptions opt;
  opt.temperature = 0.0;
  opt.max_new_tokens = 12;
  auto free = generate(m, kPrompts, opt, /*eos_id=*/-1, kPad);  // no EOS: the full greedy run
  for (const auto& row : free) ASSERT_EQ(row.size(), 12u);
  // Declare row 0's 4th greedy token to be EOS: row 0 stops before its first occurrence,
  // the other rows stop before theirs (or run to the end).
  const int64_t eos = free[0][3];
  std::vector<std::vector<int64_t>> reported(kPrompts.size());
  auto stopped = generate(m, kPrompts, opt, eos, kPad, nullptr, [&](int64_t, const std::vector<int64_t>& appended) {
    for (size_t i = 0; i < appended.size(); ++i)
      if (appended[i] >= 0) reported[i].push_back(appended[i]);
      else EXPECT_TRUE(reported[i].size() == stopped_length(free[i], eos)) << "-1 only once row " << i << " stopped";
  });
  EXPECT_EQ(reported, stopped);
  for (size_t i = 0; i < free.size(); ++i) {
    std::vector<int64_t> expected;
    for (int64_t t : free[i]) {
      if (t == eos) break;
      expected.push_back(t);
    }
    EXPECT_EQ(stopped[i], expected) << "row " << i;
  }
  EXPECT_LE(stopped[0].size(), 3u);

  // The same model with that id among its generation_config.json's eos_token_id stops there too,
  // the tokenizer's EOS aside (ids outside the vocabulary and non-integers are passed over).
  auto shape = llama_shape();
  shape.hf_generation_config = nlohmann::json{{"eos_token_id", {-3, "x", 1 << 30, eos}}}.dump();
  auto configured = make_model(shape, 5);
  EXPECT_EQ(generate(configured, kPrompts, opt, /*eos_id=*/-1, kPad), stopped);
  shape.hf_generation_config = nlohmann::json{{"eos_token_id", eos}}.dump();
  EXPECT_EQ(generate(configured = make_model(shape, 5), kPrompts, opt, -1, kPad), stopped) << "one id";
  shape.hf_generation_config = "{not json";
  EXPECT_EQ(generate(configured = make_model(shape, 5), kPrompts, opt, -1, kPad), free);
  // Without a generation_config.json, config.json's eos_token_id (transformers' from_model_config).
  shape.hf_generation_config = "";
  shape.hf_config = nlohmann::json{{"eos_token_id", {eos}}}.dump();
  std::vector<int64_t> stopped_by;
  EXPECT_EQ(generate(configured = make_model(shape, 5), kPrompts, opt, -1, kPad, nullptr, {}, &stopped_by), stopped);
  for (size_t i = 0; i < free.size(); ++i)
    EXPECT_EQ(stopped_by[i], stopped[i].size() < free[i].size() ? eos : -1) << "row " << i << ": the id that stopped it";
}

// Each row has its own budget: the model's length less its own prompt (prompts of 4, 8 and 2
// tokens in a 12-token model: 8, 4 and 10 new tokens), not less the longest prompt of its batch.
// Rows that stop leave the batch and the padding columns no remaining row needs leave the cache;
// every row still decodes as it would alone (learned positions amplified, a sliding window).
TEST(ModelGenerate, EachRowHasItsOwnBudgetAndStoppedRowsLeaveTheBatch) {
  auto windowed = llama_shape();
  windowed.sliding_window = 5;
  windowed.sliding_layers.assign(static_cast<size_t>(windowed.n_layers), true);
  auto shapes = all_test_shapes();
  shapes.push_back({"sliding window", windowed});
  for (auto& [name, s] : shapes) {
    s.max_seq_len = 12;
    auto m = make_model(s, 6);
    amplify_positions(m);
    SamplingOptions opt;
    opt.temperature = 0.0;
    opt.max_new_tokens = 50;
    const auto out = generate(m, kPrompts, opt, -1, kPad);
    ASSERT_EQ(out.size(), kPrompts.size());
    for (size_t i = 0; i < kPrompts.size(); ++i) {
      const auto budget = static_cast<int64_t>(12 - kPrompts[i].size());
      EXPECT_EQ(out[i], manual_greedy(m, kPrompts[i], budget, -1)) << name << " row " << i;
    }
    // Row 1 (8 tokens, budget 4) stops at its second token: the others go on without it.
    const int64_t eos = out[1][1];
    std::vector<int64_t> stopped_by;
    const auto stopped = generate(m, kPrompts, opt, eos, kPad, nullptr, {}, &stopped_by);
    for (size_t i = 0; i < kPrompts.size(); ++i)
      EXPECT_EQ(stopped[i], manual_greedy(m, kPrompts[i], static_cast<int64_t>(12 - kPrompts[i].size()), eos))
          << name << " row " << i << " with EOS " << eos;
    EXPECT_EQ(stopped_by[1], eos);
    // A prompt the model has no room after samples nothing; the others as before.
    auto with_full = kPrompts;
    with_full.push_back(std::vector<int64_t>(12, 65));
    const auto full = generate(m, with_full, opt, -1, kPad);
    EXPECT_TRUE(full.back().empty()) << name;
    EXPECT_EQ(std::vector<std::vector<int64_t>>(full.begin(), full.end() - 1), out) << name;
  }
}

TEST(ModelGenerate, RespectsMaxSeqLenAndCancel) {
  auto s = llama_shape();
  s.max_seq_len = 12;
  auto m = make_model(s, 6);
  SamplingOptions opt;
  opt.temperature = 0.0;
  opt.max_new_tokens = 50;
  auto out = generate(m, kPrompts, opt, -1, kPad);  // prompts of 4, 8 and 2 tokens
  for (size_t i = 0; i < kPrompts.size(); ++i) EXPECT_EQ(out[i].size(), 12 - kPrompts[i].size());

  std::atomic<bool> cancel{false};
  int64_t calls = 0;
  opt.max_new_tokens = 6;
  std::vector<std::vector<int64_t>> reported(kPrompts.size());
  auto cancelled = generate(m, kPrompts, opt, -1, kPad, &cancel, [&](int64_t step, const std::vector<int64_t>& appended) {
    ++calls;
    for (size_t i = 0; i < appended.size(); ++i) reported[i].push_back(appended[i]);
    if (step == 2) cancel.store(true);
  });
  EXPECT_EQ(calls, 2);
  for (const auto& row : cancelled) EXPECT_EQ(row.size(), 2u);
  EXPECT_EQ(reported, cancelled) << "each step reports the token every row appended";
  EXPECT_TRUE(generate(m, {}, opt, -1, kPad).empty());
}

TEST(ModelGenerate, FilterProbsTopKAndTopP) {
  auto p = torch::tensor({{0.1f, 0.4f, 0.2f, 0.3f}, {0.25f, 0.25f, 0.25f, 0.25f}});
  auto close = [](const torch::Tensor& a, std::vector<float> b) {
    return torch::allclose(a, torch::tensor(b), 1e-6, 1e-6);
  };
  // top-k 2 keeps 0.4 and 0.3.
  auto k2 = filter_probs(p.clone(), 2, 1.0);
  EXPECT_TRUE(close(k2[0], {0.f, 4.f / 7, 0.f, 3.f / 7})) << k2;
  EXPECT_TRUE(torch::allclose(k2.sum(-1), torch::ones({2})));
  // top-p 0.5: 0.4 alone is below 0.5, so 0.3 joins; then the mass (0.7) reaches 0.5.
  auto p5 = filter_probs(p.clone(), 0, 0.5);
  EXPECT_TRUE(close(p5[0], {0.f, 4.f / 7, 0.f, 3.f / 7})) << p5;
  // top-p 0.3: the top token alone covers it.
  auto p3 = filter_probs(p.clone(), 0, 0.3);
  EXPECT_TRUE(close(p3[0], {0.f, 1.f, 0.f, 0.f})) << p3;
  // top-p 0.75: 0.4 + 0.3 = 0.7 < 0.75, so 0.2 joins too.
  auto p75 = filter_probs(p.clone(), 0, 0.75);
  EXPECT_TRUE(close(p75[0], {0.f, 4.f / 9, 2.f / 9, 3.f / 9})) << p75;
  // No filtering.
  EXPECT_TRUE(torch::allclose(filter_probs(p.clone(), 0, 1.0), p));
  EXPECT_TRUE(torch::allclose(filter_probs(p.clone(), 4, 1.0), p));
  // top-k 3 then top-p 0.5.
  auto kp = filter_probs(p.clone(), 3, 0.5);
  EXPECT_TRUE(close(kp[0], {0.f, 4.f / 7, 0.f, 3.f / 7})) << kp;
  // top-p 0 (transformers' min_tokens_to_keep): the top token alone, never an empty row.
  auto p0 = filter_probs(p.clone(), 0, 0.0);
  EXPECT_TRUE(close(p0[0], {0.f, 1.f, 0.f, 0.f})) << p0;
  // The uniform row: top-p 0.3 keeps at least one token and stays normalised.
  EXPECT_NEAR(p3[1].sum().item<float>(), 1.f, 1e-6);
  EXPECT_GE((p3[1] > 0).sum().item<int64_t>(), 1);
}

TEST(ModelGenerate, TopKOneSamplingIsGreedy) {
  auto m = make_model(llama_shape(), 7);
  SamplingOptions greedy;
  greedy.temperature = 0.0;
  greedy.max_new_tokens = 8;
  SamplingOptions k1;
  k1.temperature = 1.3;
  k1.top_k = 1;
  k1.max_new_tokens = 8;
  k1.seed = 77;
  EXPECT_EQ(generate(m, kPrompts, greedy, kEos, kPad), generate(m, kPrompts, k1, kEos, kPad));
}

}  // namespace
}  // namespace ganpo
