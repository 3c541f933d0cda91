// Chat templates: a conversation rendered to text exactly as Hugging Face transformers'
// `tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` renders it.
//
// There is no Jinja interpreter here. The chat_template string from a model's
// tokenizer_config.json (or chat_template.jinja) is recognised by its fingerprint among the real
// templates we have verified, and each verified variant has a small C++ renderer that reproduces
// its output byte for byte (checked against jinja2 renderings of the real template text in
// tests/core/text/chat_template_cases.json). A template text we have not verified is never
// silently treated as a known one: resolve() throws a ConfigError naming `data.chat_template`,
// and the user may name a family or variant there to render it that way on purpose.
//
// Variants (family: variant - models):
//   llama3:  llama3 (Meta-Llama-3-Instruct), llama3-original (Llama 3 as first released: always
//            appends the assistant header), llama3.1 (Llama-3.1-Instruct: "Cutting Knowledge
//            Date" system header, date 26 Jul 2024), llama3.2 (Llama-3.2-Instruct: same header
//            with today's date, as transformers' strftime_now gives it)
//   gemma:   gemma (Gemma 1 / 1.1 / 2: a system message is rejected), gemma3 (Gemma 3: the system
//            message is folded into the first user turn)
//   chatml:  chatml (plain ChatML), qwen2 (Qwen2 / Qwen1.5-4B default system prompt "You are a
//            helpful assistant."), qwen1.5 (same prompt without the period), qwen2.5 (default
//            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
//   qwen3:   qwen3, qwen3-early (the two released Qwen3 texts; they render plain messages alike:
//            the last assistant turn after the last user query gets an empty <think></think>)
//   llama2:  llama2 (Llama-2-chat, CodeLlama-Instruct), llama2-unstripped (same without strip())
//   mistral: mistral (Mistral-7B-Instruct-v0.1 / Mixtral-8x7B-Instruct-v0.1 today: " [INST] ",
//            system prepended to the first user turn), mistral-v0.1-legacy and mistral-legacy
//            (those models' first templates: no system role), mistral-v3 (Mistral-7B-Instruct-v0.3:
//            system prepended to the LAST user turn, so it disappears from a conversation that ends
//            with an assistant turn), mistral-nemo (Mistral-Nemo-Instruct-2407)
//
// Faithfulness, including the odd parts: contents are trimmed exactly where the real template
// trims them (Python str.strip(): the same Unicode whitespace), messages a template drops (e.g. a
// non-user/assistant role at an odd position for Llama 2, an unknown role for Qwen) are dropped,
// and where the real template calls raise_exception the same text is raised here as a
// ChatTemplateError. A bos / eos token the tokenizer does not set ("") renders as nothing where
// the template prints it alone and raises where it adds it to text ("'bos_token' is undefined",
// as jinja2 does). An empty message list is always an error (most templates fail on it too).
// Messages carry plain string content; tool calls, tool schemas and multimodal content are not
// supported (a "tool" role message is rendered where the template renders it from role and
// content alone).
//
// Preference rows (TRL): render_preference() mirrors trl.data_utils.apply_chat_template for a
// conversational {"prompt", "chosen", "rejected"} row, which is what maybe_apply_chat_template
// (and DPOTrainer before TRL 1.x) uses:
//   prompt_text = render(prompt, add_generation_prompt = true)   (last prompt role user or tool;
//                 an assistant last turn is continued instead: continue_final_message; any other
//                 last role is an error "Invalid role in the last message: <role>")
//   full_chosen = render(prompt + chosen, false), full_rejected = render(prompt + rejected, false)
//   prompt_text is cut back to its longest common prefix with full_chosen, then full_rejected
//   (in Unicode characters, as Python compares them; a no-op unless the template renders the
//   prompt differently on its own, e.g. mistral-v3 with a system message)
//   chosen_text = full_chosen minus that prefix, rejected_text likewise.
// TRL 1.x's DPOTrainer tokenizes the three renderings and splits token ids instead; the
// strings are the same, the split is done by the caller's tokenizer.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/error.h"

namespace ganpo {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant" (others are rendered as the template does)
  std::string content;  // UTF-8
};

enum class ChatTemplateFamily { llama3, gemma, chatml, qwen3, llama2, mistral };

// "llama3", "gemma", "chatml", "qwen3", "llama2", "mistral"
const char* to_string(ChatTemplateFamily family);

// Template variables a caller may set (TRL passes these as chat_template_kwargs).
struct ChatTemplateOptions {
  // Llama 3.1 / 3.2 `date_string` ("26 Jul 2024"); unset = the template's own default.
  std::optional<std::string> date_string;
  // The date transformers' strftime_now would read from the clock, "YYYY-MM-DD"; empty = the
  // local date now. Only Llama 3.2 uses it (fix it for reproducible data).
  std::string today;
  // Qwen3 `enable_thinking`; only an explicit false changes the output (an empty think block
  // after the generation prompt).
  std::optional<bool> enable_thinking;
};

// A conversation the real template (or transformers / TRL around it) refuses.
// what(): "<where>: <reason>: <upstream message>"; upstream_message() is exactly the text the
// Python side raises (raise_exception's argument, or transformers' / TRL's ValueError text).
class ChatTemplateError : public DataError {
public:
  ChatTemplateError(const std::string& what, std::string upstream_message)
      : DataError(what), upstream_message_(std::move(upstream_message)) {}
  const std::string& upstream_message() const { return upstream_message_; }

private:
  std::string upstream_message_;
};

// One preference row rendered for training, as TRL splits it (see above).
struct PreferenceText {
  std::string prompt;
  std::string chosen;
  std::string rejected;
  bool prompt_trimmed = false;  // the prompt rendered alone was not a prefix of the full renderings
};

struct ChatTemplateVariantInfo {
  std::string name;             // e.g. "llama3.1"
  ChatTemplateFamily family;
  std::string models;           // the models whose template this is
};

class ChatTemplate {
public:
  // template_text: the chat_template string from tokenizer_config.json (the "default" one when
  // it holds a list) or chat_template.jinja. override_name: the user's data.chat_template ("" =
  // recognise the text; a family name = that family, keeping the recognised variant when it is
  // one of the family's; a variant name = exactly that variant). bos_token / eos_token: the
  // tokenizer's special tokens as text ("" when it has none).
  // Throws ConfigError naming data.chat_template when the text is not a verified template and
  // no override is given, or when the override names nothing we know.
  static ChatTemplate resolve(const std::string& template_text, const std::string& override_name,
                              const std::string& bos_token, const std::string& eos_token);

  // The same from the text of a tokenizer_config.json (chat_template as a string or a list of
  // {"name", "template"}, special tokens as strings or {"content": ...}); a non-empty
  // jinja_file_text (chat_template.jinja, which transformers prefers when present) replaces the
  // config's template. Throws ModelFileError when the config is not valid JSON.
  static ChatTemplate from_tokenizer_config(const std::string& config_json_text,
                                            const std::string& override_name,
                                            const std::string& jinja_file_text = "");
  // Reads <folder>/tokenizer_config.json and, if present, <folder>/chat_template.jinja.
  static ChatTemplate from_model_folder(const std::string& folder, const std::string& override_name);

  // The variant name whose real template text this is, or "" when it is not one we verified.
  static std::string recognise(const std::string& template_text);
  static std::vector<ChatTemplateVariantInfo> variants();

  std::string family() const;             // "llama3", ...
  ChatTemplateFamily family_id() const;
  std::string variant() const;            // "llama3.1", ...
  bool recognised() const { return recognised_; }  // false when chosen by override only
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

  void set_options(ChatTemplateOptions options);
  const ChatTemplateOptions& options() const { return options_; }

  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  // continue_final_message: leave the last message open for the model to continue, exactly as
  // transformers does (incompatible with add_generation_prompt). where: names the data for error
  // messages ("train.jsonl line 12"); errors are ChatTemplateError (DataError).
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     bool continue_final_message, const std::string& where) const;

  // A typed prompt as one user turn followed by the generation prompt, what a chat playground
  // sends. Text that already opens the way this template's renderings open (BOS aside: a
  // rendered sample prompt of conversational data) is returned unchanged.
  std::string user_turn(const std::string& prompt) const;

  PreferenceText render_preference(const std::vector<ChatMessage>& prompt,
                                   const std::vector<ChatMessage>& chosen,
                                   const std::vector<ChatMessage>& rejected,
                                   const std::string& where = "") const;

  struct Variant;  // the table entry: name, family, renderer (chat_template.cpp)

private:
  ChatTemplate(const Variant* variant, bool recognised, std::string bos, std::string eos);

  const Variant* variant_;
  bool recognised_;
  std::string bos_token_;
  std::string eos_token_;
  ChatTemplateOptions options_;
};

}  // namespace ganpo
