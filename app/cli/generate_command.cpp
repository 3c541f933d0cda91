#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "core/checkpoint.h"
#include "core/fault_points.h"
#include "core/generate.h"
#include "core/out_of_memory.h"
#include "core/train/trainer.h"

namespace ganpo::cli {
namespace {

// The prompts' completions into args.out, batch by batch; `written` counts those in the file,
// `sampling` says the model is loaded.
int write_completions(const GenerateArgs& args, const torch::Device& device, size_t& written, bool& sampling) {
  std::error_code ec;
  if (std::filesystem::is_directory(args.prompts, ec)) {
    std::fprintf(stderr, "ganpo generate: %s is a folder; give a JSON Lines file of {\"prompt\": ...}\n", args.prompts.c_str());
    return 2;
  }
  if (std::filesystem::exists(args.out, ec) && std::filesystem::equivalent(args.out, args.prompts, ec)) {
    std::fprintf(stderr, "ganpo generate: --out %s is the prompts file; give another file to write\n", args.out.c_str());
    return 2;
  }
  std::ifstream in(args.prompts);
  if (!in) {
    std::fprintf(stderr, "ganpo generate: cannot open %s\n", args.prompts.c_str());
    return 1;
  }
  auto loaded = load_model_for_inference(args.checkpoint, device, args.precision);
  sampling = true;
  std::vector<std::string> prompts;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      prompts.push_back(nlohmann::json::parse(line).at("prompt").get<std::string>());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ganpo generate: %s:%lld: expected {\"prompt\": \"...\"} (%s)\n", args.prompts.c_str(),
                   static_cast<long long>(line_no), e.what());
      return 1;
    }
  }
  if (prompts.empty()) {
    std::fprintf(stderr, "ganpo generate: %s holds no {\"prompt\": ...} rows; nothing to generate\n", args.prompts.c_str());
    return 2;
  }
  std::ofstream out(args.out);
  if (!out) {
    std::fprintf(stderr, "ganpo generate: cannot write %s\n", args.out.c_str());
    return 1;
  }
  const auto& tok = *loaded.tokenizer;
  for (size_t start = 0; start < prompts.size(); start += static_cast<size_t>(args.batch_size)) {
    std::vector<std::vector<int64_t>> batch;
    const size_t end = std::min(prompts.size(), start + static_cast<size_t>(args.batch_size));
    for (size_t i = start; i < end; ++i) batch.push_back(encode_prompt(tok, prompts[i]));
    SamplingOptions so{args.temperature, args.top_p, args.top_k, args.max_new_tokens, args.seed};
    for (size_t i = start; i < end; ++i) so.prompt_numbers.push_back(static_cast<int64_t>(i));  // (--batch-size changes no text)
    so.bf16_autocast = loaded.bf16_autocast;
    fault_point("generate.batch");
    auto outputs = generate(loaded.model, batch, so, tok.eos_id(), tok.pad_id());
    for (size_t i = start; i < end; ++i)
      out << nlohmann::json{{"prompt", prompts[i]}, {"completion", continuation_text(tok, batch[i - start], outputs[i - start])}}.dump(
                 -1, ' ', false, nlohmann::json::error_handler_t::replace)
          << "\n";
    written = end;
  }
  std::printf("wrote %zu completions to %s\n", prompts.size(), args.out.c_str());
  return 0;
}

}  // namespace

int generate_command(const GenerateArgs& args) {
  const torch::Device device(resolve_device(args.device));
  size_t written = 0;
  bool sampling = false;
  std::string detail;  // what the allocator said, where memory ran out
  bool host = false;   // C++'s allocator refused (std::bad_alloc), not LibTorch's
  try {
    return write_completions(args, device, written, sampling);
  } catch (const c10::Error& e) {
    if (!is_out_of_memory(e)) throw;
    detail = e.what_without_backtrace();
  } catch (const std::bad_alloc& e) {
    detail = e.what(), host = true;
  }
  const std::string bf16 = device.is_cuda() && args.precision != "bf16" ? ", or --precision bf16" : "";
  const std::string message =
      sampling ? out_of_memory_message(device.str(),
                                       "sampling (" + std::to_string(written) + (written == 1 ? " completion is" : " completions are") +
                                           " in " + args.out + ")",
                                       "lower --batch-size (now " + std::to_string(args.batch_size) +
                                           ") or --max-new-tokens (now " + std::to_string(args.max_new_tokens) + ")" + bf16,
                                       detail, host)
               : out_of_memory_message(device.str(), "loading " + args.checkpoint, "use a smaller model" + bf16, detail, host);
  std::fprintf(stderr, "ganpo generate: %s\n", message.c_str());
  return 1;
}

}  // namespace ganpo::cli
