#include "core/checkpoint.h"

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/safetensors.h"

namespace fs = std::filesystem;

namespace ganpo {

void write_json_file(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) throw Error("cannot write " + path + "; check free disk space and permissions");
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ModelFileError("missing file " + path + "; the folder is incomplete");
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw ModelFileError(path + " is not valid JSON (" + std::string(e.what()) +
                         "); the file is corrupt, use another checkpoint");
  }
}

void save_model_files(const std::string& dir, CausalLM& model, const Tokenizer& tokenizer) {
  fs::create_directories(dir);
  save_safetensors((fs::path(dir) / "model.safetensors").string(), model_state(model),
                   {{"format", "pt"}});
  write_json_file((fs::path(dir) / "config.json").string(), shape_to_json(model->shape()));
  tokenizer.save(dir);
}

LoadedModel load_model_folder(const std::string& dir, const torch::Device& device) {
  if (!fs::is_directory(dir))
    throw ModelFileError("model folder " + dir + " does not exist; give a checkpoint-<step> or final folder");
  LoadedModel out;
  out.shape = shape_from_json(read_json_file((fs::path(dir) / "config.json").string()));
  out.tokenizer = load_tokenizer(dir);
  if (out.tokenizer->vocab_size() > out.shape.vocab_size)
    throw ModelFileError(dir + ": tokenizer has " + std::to_string(out.tokenizer->vocab_size()) +
                         " tokens but config.json vocab_size is " + std::to_string(out.shape.vocab_size));
  out.model = CausalLM(out.shape);
  const auto weights_path = (fs::path(dir) / "model.safetensors").string();
  load_model_state(out.model, load_safetensors(weights_path).tensors, weights_path);
  out.model->to(device);
  out.model->eval();
  return out;
}

void write_folder_atomically(const std::string& dir, const std::function<void(const std::string&)>& write) {
  const std::string tmp = dir + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  write(tmp);
  const std::string old = dir + ".old";
  fs::remove_all(old);
  if (fs::exists(dir)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  fs::remove_all(old);
}

}  // namespace ganpo
