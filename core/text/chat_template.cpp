#include "core/text/chat_template.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace ganpo {

namespace {

// ---------------------------------------------------------------------------------------------
// Python string semantics the templates rely on. Contents are UTF-8; Python works on code points,
// so trimming decodes the characters at the ends rather than looking at bytes.

// str.isspace() in CPython (Unicode 14/15 tables).
bool is_py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// Decodes the code point starting at s[i]; returns its length in bytes, 0 when the bytes are not
// valid UTF-8 (such a byte is then simply not whitespace: bad input must not crash).
size_t decode_at(const std::string& s, size_t i, char32_t* out) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  size_t len = 0;
  char32_t cp = 0;
  if (b0 < 0x80) {
    *out = b0;
    return 1;
  } else if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1F;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0F;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  *out = cp;
  return len;
}

bool is_continuation(unsigned char b) { return (b & 0xC0) == 0x80; }

// Python's str.strip() / lstrip() / rstrip() without arguments; Jinja's `trim` filter is the same.
std::string py_strip(const std::string& s, bool left = true, bool right = true) {
  size_t begin = 0, end = s.size();
  if (left) {
    while (begin < end) {
      char32_t cp;
      const size_t n = decode_at(s, begin, &cp);
      if (n == 0 || !is_py_space(cp)) break;
      begin += n;
    }
  }
  if (right) {
    while (end > begin) {
      size_t start = end - 1;
      while (start > begin && end - start < 4 && is_continuation(static_cast<unsigned char>(s[start]))) --start;
      char32_t cp;
      const size_t n = decode_at(s, start, &cp);
      if (n == 0 || start + n != end || !is_py_space(cp)) break;
      end = start;
    }
  }
  return s.substr(begin, end - begin);
}

// str.strip(ch) / lstrip(ch) / rstrip(ch) with one ASCII character.
std::string strip_char(const std::string& s, char ch, bool left, bool right) {
  size_t begin = 0, end = s.size();
  if (left) while (begin < end && s[begin] == ch) ++begin;
  if (right) while (end > begin && s[end - 1] == ch) --end;
  return s.substr(begin, end - begin);
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// s.split(sep)[0] and s.split(sep)[-1].
std::string before_first(const std::string& s, const std::string& sep) {
  const size_t at = s.find(sep);
  return at == std::string::npos ? s : s.substr(0, at);
}
std::string after_last(const std::string& s, const std::string& sep) {
  const size_t at = s.rfind(sep);
  return at == std::string::npos ? s : s.substr(at + sep.size());
}

// json.dumps(str, ensure_ascii=False): transformers' tojson filter on a string.
std::string tojson_string(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

// datetime.strftime("%d %b %Y") in the C locale, whatever locale this process runs in (a Qt
// application sets LC_TIME from the environment; Python leaves it at "C").
std::string format_day_month_year(int year, int month, int day) {
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02d %s %d", day, kMonths[month - 1], year);  // glibc %Y does not pad
  return buf;
}

std::string today_string(const std::string& today) {
  if (today.empty()) {
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    return format_day_month_year(local.tm_year + 1900, local.tm_mon + 1, local.tm_mday);
  }
  int y = 0, m = 0, d = 0;
  char tail = 0;
  if (std::sscanf(today.c_str(), "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || m < 1 || m > 12 || d < 1 ||
      d > 31 || y < 1) {
    throw Error("ChatTemplateOptions::today must be a date YYYY-MM-DD, got \"" + today + "\"");
  }
  return format_day_month_year(y, m, d);
}

// ---------------------------------------------------------------------------------------------
// Renderers. Each follows its Jinja template statement by statement; `Raise` is the template's
// raise_exception(...).

struct Raise : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A special token the tokenizer does not set ("" here; transformers leaves it out of the template's
// variables, so it is undefined there). Printed alone (`{{ bos_token }}`) it renders as nothing;
// added to text (`bos_token + content`) jinja2 raises UndefinedError. what(): the variable's name.
struct Undefined : std::runtime_error {
  using std::runtime_error::runtime_error;
};
const std::string& added_token(const std::string& token, const char* name) {
  if (token.empty()) throw Undefined(name);
  return token;
}

struct Call {
  const std::vector<ChatMessage>& messages;
  bool add_generation_prompt;
  const std::string& bos;
  const std::string& eos;
  const ChatTemplateOptions& options;
};

using Messages = std::vector<ChatMessage>;
const char* const kAlternate = "Conversation roles must alternate user/assistant/user/assistant/...";
const char* const kAlternateAfterSystem =
    "After the optional system message, conversation roles must alternate user/assistant/user/assistant/...";
const char* const kOnlyUserAssistantSystem =
    "Only user and assistant roles are supported, with the exception of an initial optional system message!";

// messages[0]['role'] == 'system' splits off the system message.
bool split_system(const Messages& all, std::string* system, Messages* rest) {
  if (!all.empty() && all[0].role == "system") {
    *system = all[0].content;
    rest->assign(all.begin() + 1, all.end());
    return true;
  }
  *rest = all;
  return false;
}

const char* const kLlama3Header = "<|start_header_id|>assistant<|end_header_id|>\n\n";

std::string render_llama3(const Call& c, bool always_add_generation_prompt) {
  std::string out;
  for (size_t i = 0; i < c.messages.size(); ++i) {
    const auto& m = c.messages[i];
    if (i == 0) out += added_token(c.bos, "bos_token");  // {% set content = bos_token + content %}
    out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + py_strip(m.content) + "<|eot_id|>";
  }
  if (always_add_generation_prompt || c.add_generation_prompt) out += kLlama3Header;
  return out;
}

// Llama 3.1 and 3.2 differ (for plain messages) only in where the default date comes from.
std::string render_llama31(const Call& c, bool date_from_clock) {
  std::string date;
  if (c.options.date_string) {
    date = *c.options.date_string;
  } else {
    date = date_from_clock ? today_string(c.options.today) : "26 Jul 2024";
  }
  std::string system;
  Messages messages;
  if (split_system(c.messages, &system, &messages)) system = py_strip(system);
  std::string out = c.bos;
  out += "<|start_header_id|>system<|end_header_id|>\n\n";
  out += "Cutting Knowledge Date: December 2023\n";
  out += "Today Date: " + date + "\n\n";
  out += system;
  out += "<|eot_id|>";
  for (const auto& m : messages) {
    if (m.role == "ipython" || m.role == "tool") {
      // A string passes the template's `is iterable` test, so tool output is JSON-quoted.
      out += "<|start_header_id|>ipython<|end_header_id|>\n\n" + tojson_string(m.content) + "<|eot_id|>";
    } else {
      out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + py_strip(m.content) + "<|eot_id|>";
    }
  }
  if (c.add_generation_prompt) out += kLlama3Header;
  return out;
}

std::string gemma_role(const std::string& role) { return role == "assistant" ? "model" : role; }

std::string render_gemma(const Call& c) {
  std::string out = c.bos;
  if (c.messages[0].role == "system") throw Raise("System role not supported");
  for (size_t i = 0; i < c.messages.size(); ++i) {
    const auto& m = c.messages[i];
    if ((m.role == "user") != (i % 2 == 0)) throw Raise(kAlternate);
    out += "<start_of_turn>" + gemma_role(m.role) + "\n" + py_strip(m.content) + "<end_of_turn>\n";
  }
  if (c.add_generation_prompt) out += "<start_of_turn>model\n";
  return out;
}

std::string render_gemma3(const Call& c) {
  std::string out = c.bos;
  std::string system, first_user_prefix;
  Messages loop;
  if (split_system(c.messages, &system, &loop)) first_user_prefix = system + "\n\n";
  for (size_t i = 0; i < loop.size(); ++i) {
    const auto& m = loop[i];
    if ((m.role == "user") != (i % 2 == 0)) throw Raise(kAlternate);
    out += "<start_of_turn>" + gemma_role(m.role) + "\n" + (i == 0 ? first_user_prefix : std::string()) +
           py_strip(m.content) + "<end_of_turn>\n";
  }
  if (c.add_generation_prompt) out += "<start_of_turn>model\n";
  return out;
}

// Plain ChatML, optionally with the default system prompt of Qwen1.5 / Qwen2.
std::string render_chatml(const Call& c, const char* default_system) {
  std::string out;
  for (size_t i = 0; i < c.messages.size(); ++i) {
    const auto& m = c.messages[i];
    if (i == 0 && default_system != nullptr && c.messages[0].role != "system") {
      out += std::string("<|im_start|>system\n") + default_system + "<|im_end|>\n";
    }
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  if (c.add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

// Qwen2.5 / Qwen3: consecutive tool messages share one user turn of <tool_response> blocks.
void render_qwen_tool(const Messages& ms, size_t i, std::string* out) {
  if (i == 0 || ms[i - 1].role != "tool") *out += "<|im_start|>user";
  *out += "\n<tool_response>\n" + ms[i].content + "\n</tool_response>";
  if (i + 1 == ms.size() || ms[i + 1].role != "tool") *out += "<|im_end|>\n";
}

std::string render_qwen25(const Call& c) {
  const auto& ms = c.messages;
  std::string out;
  if (ms[0].role == "system") {
    out += "<|im_start|>system\n" + ms[0].content + "<|im_end|>\n";
  } else {
    out += "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n";
  }
  for (size_t i = 0; i < ms.size(); ++i) {
    const auto& m = ms[i];
    if (m.role == "user" || (m.role == "system" && i != 0) || m.role == "assistant") {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    } else if (m.role == "tool") {
      render_qwen_tool(ms, i, &out);
    }  // any other role: the template renders nothing for it
  }
  if (c.add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

std::string render_qwen3(const Call& c) {
  const auto& ms = c.messages;
  std::string out;
  if (ms[0].role == "system") out += "<|im_start|>system\n" + ms[0].content + "<|im_end|>\n";
  // The last user turn that is not a wrapped tool response is "the query": only assistant turns
  // after it keep (or get an empty) think block.
  size_t last_query = ms.size() - 1;
  for (size_t k = ms.size(); k-- > 0;) {
    const auto& m = ms[k];
    if (m.role == "user" && !(starts_with(m.content, "<tool_response>") && ends_with(m.content, "</tool_response>"))) {
      last_query = k;
      break;
    }
  }
  for (size_t i = 0; i < ms.size(); ++i) {
    const auto& m = ms[i];
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    } else if (m.role == "assistant") {
      std::string content = m.content, reasoning;
      if (contains(content, "</think>")) {
        reasoning = strip_char(after_last(strip_char(before_first(content, "</think>"), '\n', false, true), "<think>"),
                               '\n', true, false);
        content = strip_char(after_last(content, "</think>"), '\n', true, false);
      }
      const bool last = i + 1 == ms.size();
      if (i > last_query && (last || !reasoning.empty())) {
        out += "<|im_start|>assistant\n<think>\n" + strip_char(reasoning, '\n', true, true) + "\n</think>\n\n" +
               strip_char(content, '\n', true, false);
      } else {
        out += "<|im_start|>assistant\n" + content;
      }
      out += "<|im_end|>\n";
    } else if (m.role == "tool") {
      render_qwen_tool(ms, i, &out);
    }  // any other role: the template renders nothing for it
  }
  if (c.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (c.options.enable_thinking && !*c.options.enable_thinking) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

std::string render_llama2(const Call& c, bool strip) {
  std::string system;
  Messages loop;
  const bool has_system = split_system(c.messages, &system, &loop);
  std::string out;
  for (size_t i = 0; i < loop.size(); ++i) {
    const auto& m = loop[i];
    if ((m.role == "user") != (i % 2 == 0)) throw Raise(kAlternate);
    std::string content = m.content;
    if (i == 0 && has_system) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + m.content;
    if (strip) content = py_strip(content);
    if (m.role == "user") {
      out += added_token(c.bos, "bos_token") + "[INST] " + content + " [/INST]";
    } else if (m.role == "assistant") {
      out += " " + content + " " + added_token(c.eos, "eos_token");
    }  // any other role (at an odd position): the template renders nothing for it
  }
  return out;
}

// Mistral-7B-Instruct-v0.1 / Mixtral-8x7B-Instruct-v0.1 as updated in 2024 (V1 tokenizer spacing).
std::string render_mistral_v1(const Call& c) {
  std::string system;
  Messages loop;
  const bool has_system = split_system(c.messages, &system, &loop);
  std::string out = c.bos;
  for (size_t i = 0; i < loop.size(); ++i) {
    const auto& m = loop[i];
    if ((m.role == "user") != (i % 2 == 0)) throw Raise(kAlternateAfterSystem);
    if (m.role == "user") {
      if (i == 0 && has_system) {
        out += " [INST] " + system + "\n\n" + m.content + " [/INST]";
      } else {
        out += " [INST] " + m.content + " [/INST]";
      }
    } else if (m.role == "assistant") {
      out += " " + m.content + added_token(c.eos, "eos_token");
    } else {
      throw Raise(kOnlyUserAssistantSystem);
    }
  }
  return out;
}

// The first Mistral / Mixtral templates: no system role at all.
std::string render_mistral_legacy(const Call& c, bool space_after_eos) {
  std::string out = c.bos;
  for (size_t i = 0; i < c.messages.size(); ++i) {
    const auto& m = c.messages[i];
    if ((m.role == "user") != (i % 2 == 0)) throw Raise(kAlternate);
    if (m.role == "user") {
      out += "[INST] " + m.content + " [/INST]";
    } else if (m.role == "assistant") {
      out += m.content + added_token(c.eos, "eos_token") + (space_after_eos ? " " : "");
    } else {
      throw Raise("Only user and assistant roles are supported!");
    }
  }
  return out;
}

// Mistral-7B-Instruct-v0.3 and Mistral-Nemo: the system message goes into the last message only
// when that message is a user turn.
std::string render_mistral_v3(const Call& c, bool nemo) {
  std::string system;
  Messages loop;
  const bool has_system = split_system(c.messages, &system, &loop);
  size_t index = 0;  // the template checks alternation first, skipping tool results
  for (const auto& m : loop) {
    if (m.role == "tool" || m.role == "tool_results") continue;
    if ((m.role == "user") != (index % 2 == 0)) throw Raise(kAlternateAfterSystem);
    ++index;
  }
  const std::string inst = nemo ? "[INST]" : "[INST] ";
  std::string out = c.bos;
  for (size_t i = 0; i < loop.size(); ++i) {
    const auto& m = loop[i];
    if (m.role == "user") {
      if (i + 1 == loop.size() && has_system) {
        out += inst + system + "\n\n" + m.content + "[/INST]";
      } else {
        out += inst + m.content + "[/INST]";
      }
    } else if (m.role == "assistant") {
      out += nemo ? m.content + added_token(c.eos, "eos_token") : " " + py_strip(m.content) + added_token(c.eos, "eos_token");
    } else if (m.role == "tool_results" || m.role == "tool") {
      // Plain messages carry no tool_call_id, which the template demands.
      throw Raise("Tool call IDs should be alphanumeric strings with length 9!");
    } else {
      throw Raise(kOnlyUserAssistantSystem);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The table of known templates.

struct Fingerprint {
  uint64_t fnv1a;     // of the template text without one trailing '\n' (Jinja drops it anyway)
  size_t length;      // of the same
  const char* variant;
  const char* source;  // whose tokenizer_config.json it was copied from (see the test fixtures)
};

// Real template texts, verified against jinja2 renderings (tests/core/text/chat_templates/).
const Fingerprint kFingerprints[] = {
    {0x88bf4138d5c826f0ULL, 196, "chatml", "Felladrin/Llama-68M-Chat-v1"},
    {0x773d13e188afc917ULL, 291, "chatml", "Open-Orca/Mistral-7B-OpenOrca"},
    {0x5c10ee65212d93b3ULL, 591, "gemma", "google/gemma-2b-it, gemma-7b-it, Gemma 2"},
    {0xd19b6ff3a49deea5ULL, 1531, "gemma3", "google/gemma-3-1b-it"},
    {0x54f74c2db3c2b5b9ULL, 813, "llama2", "codellama/CodeLlama-34b-Instruct-hf"},
    {0xf344eecf1bd3a427ULL, 815, "llama2", "meta-llama/Llama-2-7b-chat-hf"},
    {0xc360c4b4248f4221ULL, 795, "llama2-unstripped", "Llama-2-chat fine-tunes"},
    {0x0e60067a5537498eULL, 389, "llama3", "meta-llama/Meta-Llama-3-8B-Instruct"},
    {0x74891e390e614ae2ULL, 348, "llama3-original", "meta-llama/Meta-Llama-3-8B-Instruct (first release)"},
    {0xcc0368e1ffb6b958ULL, 4613, "llama3.1", "meta-llama/Llama-3.1-8B-Instruct"},
    {0x368f4c34b8554414ULL, 3826, "llama3.2", "meta-llama/Llama-3.2-3B-Instruct"},
    {0x46eac0bf5c765c47ULL, 1057, "mistral", "mistralai/Mistral-7B-Instruct-v0.1, Mixtral-8x7B-Instruct-v0.1"},
    {0x8c734b90b4f8d84dULL, 470, "mistral-legacy", "mistralai/Mixtral-8x7B-Instruct-v0.1 (first release)"},
    {0x20783e9d94168233ULL, 3944, "mistral-nemo", "mistralai/Mistral-Nemo-Instruct-2407"},
    {0xc730acc029ce6ee0ULL, 477, "mistral-v0.1-legacy", "mistralai/Mistral-7B-Instruct-v0.1 (first release)"},
    {0x2487e6e79d6345cfULL, 3958, "mistral-v3", "mistralai/Mistral-7B-Instruct-v0.3"},
    {0xc867da37c989d41fULL, 327, "qwen1.5", "Qwen/Qwen1.5-0.5B-Chat"},
    {0x8a87094e0e1e24c5ULL, 328, "qwen2", "Qwen/Qwen2-7B-Instruct"},
    {0xe642ce246d7f2e3dULL, 2506, "qwen2.5", "Qwen/Qwen2.5-3B-Instruct"},
    {0x959a4551391a6549ULL, 4168, "qwen3", "Qwen/Qwen3-1.7B"},
    {0x2bfdb7aa9754484eULL, 4116, "qwen3-early", "Qwen/Qwen3-8B-Base"},
};

uint64_t fnv1a64(const char* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace

struct ChatTemplate::Variant {
  const char* name;
  ChatTemplateFamily family;
  const char* models;
  std::string (*render)(const Call&);
};

namespace {

using Family = ChatTemplateFamily;

// The first variant of each family is the one its family name selects.
const ChatTemplate::Variant kVariants[] = {
    {"llama3", Family::llama3, "Meta-Llama-3-Instruct", [](const Call& c) { return render_llama3(c, false); }},
    {"llama3-original", Family::llama3, "Meta-Llama-3-Instruct as first released (always adds the assistant header)",
     [](const Call& c) { return render_llama3(c, true); }},
    {"llama3.1", Family::llama3, "Llama-3.1-Instruct", [](const Call& c) { return render_llama31(c, false); }},
    {"llama3.2", Family::llama3, "Llama-3.2-Instruct (today's date in the system header)",
     [](const Call& c) { return render_llama31(c, true); }},
    {"gemma", Family::gemma, "Gemma 1, 1.1 and 2 instruct (no system role)", render_gemma},
    {"gemma3", Family::gemma, "Gemma 3 instruct (system folded into the first user turn)", render_gemma3},
    {"chatml", Family::chatml, "plain ChatML (OpenHermes, OpenOrca, ...)",
     [](const Call& c) { return render_chatml(c, nullptr); }},
    {"qwen2", Family::chatml, "Qwen2-Instruct, Qwen1.5-4B-Chat (default system prompt)",
     [](const Call& c) { return render_chatml(c, "You are a helpful assistant."); }},
    {"qwen1.5", Family::chatml, "Qwen1.5-0.5B-Chat, Qwen1.5-MoE-A2.7B-Chat",
     [](const Call& c) { return render_chatml(c, "You are a helpful assistant"); }},
    {"qwen2.5", Family::chatml, "Qwen2.5-Instruct (default system prompt \"You are Qwen, ...\")", render_qwen25},
    {"qwen3", Family::qwen3, "Qwen3", render_qwen3},
    {"qwen3-early", Family::qwen3, "Qwen3 as first released, Qwen3-Base", render_qwen3},
    {"llama2", Family::llama2, "Llama-2-chat, CodeLlama-Instruct", [](const Call& c) { return render_llama2(c, true); }},
    {"llama2-unstripped", Family::llama2, "Llama-2-chat template without strip()",
     [](const Call& c) { return render_llama2(c, false); }},
    {"mistral", Family::mistral, "Mistral-7B-Instruct-v0.1, Mixtral-8x7B-Instruct-v0.1 (system before the first user turn)",
     render_mistral_v1},
    {"mistral-v0.1-legacy", Family::mistral, "Mistral-7B-Instruct-v0.1 as first released (no system role)",
     [](const Call& c) { return render_mistral_legacy(c, true); }},
    {"mistral-legacy", Family::mistral,
     "Mixtral-8x7B-Instruct-v0.1 / Mistral-7B-Instruct-v0.2 before the 2024 update (no system role)",
     [](const Call& c) { return render_mistral_legacy(c, false); }},
    {"mistral-v3", Family::mistral, "Mistral-7B-Instruct-v0.3 (system before the last user turn)",
     [](const Call& c) { return render_mistral_v3(c, false); }},
    {"mistral-nemo", Family::mistral, "Mistral-Nemo-Instruct-2407", [](const Call& c) { return render_mistral_v3(c, true); }},
};

const ChatTemplate::Variant* find_variant(const std::string& name) {
  for (const auto& v : kVariants) {
    if (name == v.name) return &v;
  }
  return nullptr;
}

const ChatTemplate::Variant* family_default(const std::string& name) {
  for (const auto& v : kVariants) {
    if (name == to_string(v.family)) return &v;
  }
  return nullptr;
}

std::string names_list() {
  std::string families, variants;
  for (const auto& v : kVariants) {
    const std::string fam = to_string(v.family);
    if (!contains(" " + families + ",", " " + fam + ",")) families += (families.empty() ? "" : ", ") + fam;
    variants += (variants.empty() ? "" : ", ") + std::string(v.name);
  }
  return "families " + families + "; variants " + variants;
}

// For the error message only: which family an unverified template resembles.
std::string looks_like(const std::string& text) {
  if (contains(text, "<|start_header_id|>")) return "Llama 3";
  if (contains(text, "<start_of_turn>")) return "Gemma";
  if (contains(text, "<|im_start|>") && contains(text, "<think>")) return "Qwen3";
  if (contains(text, "<|im_start|>")) return "ChatML / Qwen";
  if (contains(text, "<<SYS>>")) return "Llama 2";
  if (contains(text, "[INST]")) return "Mistral";
  return "";
}

std::string prefixed(const std::string& where, const std::string& text) {
  return (where.empty() ? std::string("conversation") : where) + ": " + text;
}

// Longest common prefix in whole UTF-8 characters, as Python compares str (never half a character).
size_t common_prefix(const std::string& a, const std::string& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  if (i < a.size()) {
    while (i > 0 && is_continuation(static_cast<unsigned char>(a[i]))) --i;
  } else if (i < b.size()) {
    while (i > 0 && is_continuation(static_cast<unsigned char>(b[i]))) --i;
  }
  return i;
}

std::string json_token_text(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object()) {
    const auto it = value.find("content");
    if (it != value.end() && it->is_string()) return it->get<std::string>();
  }
  return "";
}

std::string read_file(const std::string& path, bool* found) {
  std::ifstream in(path, std::ios::binary);
  *found = static_cast<bool>(in);
  if (!in) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

const char* to_string(ChatTemplateFamily family) {
  switch (family) {
    case ChatTemplateFamily::llama3: return "llama3";
    case ChatTemplateFamily::gemma: return "gemma";
    case ChatTemplateFamily::chatml: return "chatml";
    case ChatTemplateFamily::qwen3: return "qwen3";
    case ChatTemplateFamily::llama2: return "llama2";
    case ChatTemplateFamily::mistral: return "mistral";
  }
  return "?";
}

ChatTemplate::ChatTemplate(const Variant* variant, bool recognised, std::string bos, std::string eos)
    : variant_(variant), recognised_(recognised), bos_token_(std::move(bos)), eos_token_(std::move(eos)) {}

std::string ChatTemplate::recognise(const std::string& template_text) {
  size_t n = template_text.size();
  if (n > 0 && template_text[n - 1] == '\n') --n;
  const uint64_t h = fnv1a64(template_text.data(), n);
  for (const auto& f : kFingerprints) {
    if (f.length == n && f.fnv1a == h) return f.variant;
  }
  return "";
}

std::vector<ChatTemplateVariantInfo> ChatTemplate::variants() {
  std::vector<ChatTemplateVariantInfo> out;
  for (const auto& v : kVariants) out.push_back({v.name, v.family, v.models});
  return out;
}

ChatTemplate ChatTemplate::resolve(const std::string& template_text, const std::string& override_name,
                                   const std::string& bos_token, const std::string& eos_token) {
  const std::string known = recognise(template_text);
  const Variant* recognised = known.empty() ? nullptr : find_variant(known);
  if (!override_name.empty()) {
    // A family name keeps the model's own variant when it belongs to that family (the model's
    // template is then known exactly); otherwise it means the family's first variant, which
    // carries the family's name.
    if (family_default(override_name) != nullptr && recognised != nullptr &&
        to_string(recognised->family) == override_name) {
      return ChatTemplate(recognised, true, bos_token, eos_token);
    }
    if (const Variant* v = find_variant(override_name)) {
      return ChatTemplate(v, recognised == v, bos_token, eos_token);
    }
    throw ConfigError("data.chat_template: unknown chat template \"" + override_name + "\"; use \"\" to take the model's " +
                      "own template, or one of: " + names_list());
  }
  if (recognised != nullptr) return ChatTemplate(recognised, true, bos_token, eos_token);
  if (template_text.empty()) {
    throw ConfigError("data.chat_template: the model has no chat template (no chat_template in tokenizer_config.json "
                      "and no chat_template.jinja), so conversational data cannot be formatted; set data.chat_template "
                      "to the format the model was trained with (e.g. data.chat_template = \"chatml\"), one of: " +
                      names_list());
  }
  const std::string like = looks_like(template_text);
  throw ConfigError(
      "data.chat_template: the model's chat template is not one this build can render exactly" +
      (like.empty() ? std::string() : " (it looks like a " + like + " template, but this exact text has not been verified)") +
      ". Set data.chat_template to the family or variant to render it as (e.g. data.chat_template = \"llama3.1\"), "
      "after checking that its output matches the model's template: " + names_list() + ".");
}

ChatTemplate ChatTemplate::from_tokenizer_config(const std::string& config_json_text, const std::string& override_name,
                                                 const std::string& jinja_file_text) {
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(config_json_text);
  } catch (const nlohmann::json::exception& e) {
    throw ModelFileError(std::string("tokenizer_config.json is not valid JSON: ") + e.what());
  }
  if (!config.is_object()) throw ModelFileError("tokenizer_config.json does not hold a JSON object");
  std::string text = jinja_file_text;
  if (text.empty()) {
    const auto it = config.find("chat_template");
    if (it != config.end() && it->is_string()) {
      text = it->get<std::string>();
    } else if (it != config.end() && it->is_array()) {
      // Named templates: transformers uses the one called "default".
      for (const auto& entry : *it) {
        // Fields of the wrong type are skipped, never read: entry.value() would throw json's own
        // type_error for a "name" that is not a string.
        if (!entry.is_object()) continue;
        const auto name = entry.find("name"), body = entry.find("template");
        if (name != entry.end() && *name == "default" && body != entry.end() && body->is_string())
          text = body->get<std::string>();
      }
    }
  }
  const auto token = [&](const char* key) {
    const auto it = config.find(key);
    return it == config.end() ? std::string() : json_token_text(*it);
  };
  return resolve(text, override_name, token("bos_token"), token("eos_token"));
}

ChatTemplate ChatTemplate::from_model_folder(const std::string& folder, const std::string& override_name) {
  bool found = false;
  const std::string config = read_file(folder + "/tokenizer_config.json", &found);
  if (!found) {
    throw ModelFileError(folder + "/tokenizer_config.json cannot be read; a Hugging Face model folder needs it for the "
                         "chat template and special tokens");
  }
  bool have_jinja = false;
  const std::string jinja = read_file(folder + "/chat_template.jinja", &have_jinja);
  // special_tokens_map.json's bos / eos win over tokenizer_config.json's, as in transformers
  // (and this folder's tokenizer): a template adding bos_token gets the one the tokenizer has.
  bool have_map = false;
  const std::string map_text = read_file(folder + "/special_tokens_map.json", &have_map);
  if (have_map) {
    auto config_json = nlohmann::json::parse(config, nullptr, false);
    const auto map = nlohmann::json::parse(map_text, nullptr, false);
    if (config_json.is_object() && map.is_object()) {
      for (const char* key : {"bos_token", "eos_token"})
        if (const auto it = map.find(key); it != map.end() && !json_token_text(*it).empty()) config_json[key] = *it;
      return from_tokenizer_config(config_json.dump(), override_name, jinja);
    }
  }
  return from_tokenizer_config(config, override_name, jinja);
}

std::string ChatTemplate::family() const { return to_string(variant_->family); }
ChatTemplateFamily ChatTemplate::family_id() const { return variant_->family; }
std::string ChatTemplate::variant() const { return variant_->name; }

void ChatTemplate::set_options(ChatTemplateOptions options) {
  if (!options.today.empty()) today_string(options.today);  // reject a malformed date now, not mid-dataset
  options_ = std::move(options);
}

std::string ChatTemplate::user_turn(const std::string& prompt) const {
  auto without_bos = [this](std::string_view text) {
    if (!bos_token_.empty() && text.substr(0, bos_token_.size()) == bos_token_) text.remove_prefix(bos_token_.size());
    return text;
  };
  // How this template's renderings open: the first bytes before the user's text.
  const std::string marker = "\x01";
  const std::string probe = render({{"user", marker}}, true);
  const std::string_view head = std::string_view(probe).substr(0, probe.find(marker));
  auto opens_like = [](std::string_view text, std::string_view opening) {
    opening = opening.substr(0, 12);
    return opening.size() >= 4 && text.substr(0, opening.size()) == opening;
  };
  // With and without BOS: ChatML files may name "<|im_start|>" as their BOS token.
  if (opens_like(prompt, head) || opens_like(without_bos(prompt), without_bos(head))) return prompt;
  return render({{"user", prompt}}, true);
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  return render(messages, add_generation_prompt, false, "");
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 bool continue_final_message, const std::string& where) const {
  if (messages.empty()) {
    throw DataError(prefixed(where, "the conversation has no messages; the " + std::string(variant_->name) +
                                        " chat template needs at least one"));
  }
  if (continue_final_message && add_generation_prompt) {
    const std::string msg =
        "continue_final_message and add_generation_prompt are not compatible. Use continue_final_message when you "
        "want the model to continue the final message, and add_generation_prompt when you want to add a header that "
        "will prompt it to start a new assistant message instead.";
    throw ChatTemplateError(prefixed(where, msg), msg);
  }
  // transformers continues the final message by rendering it with a marker appended and cutting
  // the text at the marker; doing the same keeps every template's trimming rules in play.
  static const std::string kTag = "CONTINUE_FINAL_MESSAGE_TAG ";
  std::vector<ChatMessage> tagged;
  if (continue_final_message) {
    tagged = messages;
    tagged.back().content += kTag;
  }
  const Call call{continue_final_message ? tagged : messages, add_generation_prompt, bos_token_, eos_token_, options_};
  std::string rendered;
  try {
    rendered = variant_->render(call);
  } catch (const Raise& e) {
    throw ChatTemplateError(
        prefixed(where, "the " + std::string(variant_->name) + " chat template rejects this conversation: " + e.what()),
        e.what());
  } catch (const Undefined& e) {
    const std::string upstream = "'" + std::string(e.what()) + "' is undefined";
    throw ChatTemplateError(prefixed(where, "the " + std::string(variant_->name) + " chat template adds " + e.what() +
                                                " to the text, and this tokenizer sets none (transformers fails the "
                                                "same way: " + upstream + "); set " + e.what() +
                                                " in tokenizer_config.json, or name a template in data.chat_template"),
                            upstream);
  }
  if (continue_final_message) {
    const std::string final_message = py_strip(messages.back().content);
    const std::string tag = py_strip(kTag);
    if (!contains(rendered, final_message) || !contains(rendered, tag)) {
      const std::string msg =
          "continue_final_message is set but the final message does not appear in the chat after applying the chat "
          "template! This can happen if the chat template deletes portions of the final message. Please verify the "
          "chat template and final message in your chat to ensure they are compatible.Final message to continue: " +
          final_message + "\nRendered chat:\n" + rendered;
      throw ChatTemplateError(prefixed(where, msg), msg);
    }
    const size_t at = rendered.rfind(tag);
    if (rendered.compare(at, kTag.size(), kTag) == 0) {
      rendered.resize(at);
    } else {
      rendered = py_strip(rendered.substr(0, at), false, true);
    }
  }
  return rendered;
}

PreferenceText ChatTemplate::render_preference(const std::vector<ChatMessage>& prompt,
                                               const std::vector<ChatMessage>& chosen,
                                               const std::vector<ChatMessage>& rejected,
                                               const std::string& where) const {
  if (prompt.empty()) {
    throw DataError(prefixed(where, "the prompt has no messages; a conversational preference row needs the prompt "
                                    "turns in \"prompt\" (or shared leading turns in \"chosen\" and \"rejected\")"));
  }
  const std::string& last_role = prompt.back().role;
  bool add_generation_prompt = false, continue_final_message = false;
  if (last_role == "user" || last_role == "tool") {
    add_generation_prompt = true;
  } else if (last_role == "assistant") {
    continue_final_message = true;
  } else {
    const std::string msg = "Invalid role in the last message: " + last_role;
    throw ChatTemplateError(prefixed(where, msg + " (a prompt must end with a user, tool or assistant turn)"), msg);
  }
  const std::string at = where.empty() ? std::string("conversation") : where;
  PreferenceText out;
  out.prompt = render(prompt, add_generation_prompt, continue_final_message, at + " (prompt)");
  std::vector<ChatMessage> full = prompt;
  full.insert(full.end(), chosen.begin(), chosen.end());
  const std::string prompt_chosen = render(full, false, false, at + " (prompt + chosen)");
  full.resize(prompt.size());
  full.insert(full.end(), rejected.begin(), rejected.end());
  const std::string prompt_rejected = render(full, false, false, at + " (prompt + rejected)");
  // TRL keeps only the part of the prompt that both full renderings start with.
  size_t keep = common_prefix(out.prompt, prompt_chosen);
  keep = std::min(keep, common_prefix(out.prompt.substr(0, keep), prompt_rejected));
  out.prompt_trimmed = keep != out.prompt.size();
  out.prompt.resize(keep);
  out.chosen = prompt_chosen.substr(keep);
  out.rejected = prompt_rejected.substr(keep);
  return out;
}

}  // namespace ganpo
