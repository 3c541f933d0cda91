// tokenizer_config.json and the chat templates it names, rendered: the input is the config text,
// then optionally "\n@@messages@@\n" and a JSON list of {"role", "content"} messages. The config
// is read as given (its template recognised or refused) and once more rendered by one variant
// chosen from the input, so every renderer sees hostile messages. Nothing in the file is ever
// executed: a template text is only compared with the verified ones, so no template can loop,
// recurse or grow its output; rendering is checked to stay linear in the input.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/text/chat_template.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using ganpo::ChatMessage;
using ganpo::ChatTemplate;

std::vector<ChatMessage> read_messages(const std::string& text) {
  const nlohmann::json list = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!list.is_array()) return {{"system", "Be brief."}, {"user", "Hi!"}, {"assistant", " Hello. "}, {"user", "2+2?"}};
  std::vector<ChatMessage> out;
  for (const auto& m : list) {
    if (!m.is_object()) continue;
    const auto role = m.find("role"), content = m.find("content");
    out.push_back({role != m.end() && role->is_string() ? role->get<std::string>() : "user",
                   content != m.end() && content->is_string() ? content->get<std::string>() : ""});
  }
  return out;
}

// Every renderer adds a bounded amount of text per message around the contents (and the system
// prompt a template may add once), so output beyond this means something grows without bound.
void check_size(const std::string& out, const std::vector<ChatMessage>& messages, const ChatTemplate& t) {
  size_t bound = 4096 + 4 * (t.bos_token().size() + t.eos_token().size());
  for (const auto& m : messages) bound += 2 * m.content.size() + m.role.size() + 256 + t.bos_token().size() + t.eos_token().size();
  if (out.size() > bound)
    ganpo::fuzz::invariant_failed("rendered text grows beyond the messages", t.variant() + ": " + std::to_string(out.size()));
}

void render_all(const ChatTemplate& t, const std::vector<ChatMessage>& messages) {
  using ganpo::Error;
  for (int mode = 0; mode < 3; ++mode) {
    try {
      check_size(t.render(messages, mode == 1, mode == 2, "fuzz"), messages, t);
    } catch (const Error&) {
    }
  }
  if (!messages.empty()) {
    try {
      check_size(t.user_turn(messages.back().content), messages, t);
    } catch (const Error&) {
    }
  }
  if (messages.size() >= 2) {
    const std::vector<ChatMessage> prompt(messages.begin(), messages.end() - 1);
    const std::vector<ChatMessage> chosen{messages.back()}, rejected{{"assistant", messages.front().content}};
    try {
      const auto p = t.render_preference(prompt, chosen, rejected, "fuzz");
      check_size(p.prompt + p.chosen + p.rejected, messages, t);
    } catch (const Error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ganpo;
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t cut = input.find("\n@@messages@@\n");
  const std::string config = input.substr(0, cut);
  const std::vector<ChatMessage> messages = read_messages(cut == std::string::npos ? "" : input.substr(cut + 14));
  ChatTemplateOptions options;
  options.today = "2024-09-30";  // Llama 3.2 reads the clock otherwise: keep runs reproducible
  const auto variants = ChatTemplate::variants();
  const std::string chosen = variants[std::hash<std::string>{}(input) % variants.size()].name;
  for (const std::string& override_name : {std::string(), chosen}) {
    try {
      ChatTemplate t = ChatTemplate::from_tokenizer_config(config, override_name);
      t.set_options(options);
      render_all(t, messages);
    } catch (const ConfigError&) {  // not a verified template, and no override
    } catch (const ModelFileError&) {  // not a JSON object
    }
  }
  return 0;
}
