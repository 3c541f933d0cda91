#include "core/dataset_files.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace ganpo {
namespace {

using nlohmann::json;

std::string quoted(const std::string& key) { return "\"" + key + "\""; }

// Each key may independently hold a string (used as is) or a message list, so checks and
// flattening are per key.
bool is_message_list(const json& value) { return value.is_array(); }

// Throws the reason for the first malformed message; `key` names where the list came from.
void check_messages(const json& messages, const std::string& key) {
  if (!messages.is_array()) throw DataError("key " + quoted(key) + " must be a list of messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string where = "message " + std::to_string(i + 1) + " in " + quoted(key);
    if (!m.is_object()) throw DataError(where + " is not an object with \"role\" and \"content\"");
    for (const char* field : {"role", "content"}) {
      auto it = m.find(field);
      if (it == m.end()) throw DataError(where + " has no " + quoted(field));
      if (!it->is_string()) throw DataError(where + ": " + quoted(field) + " must be a string");
    }
  }
}

std::string assistant_text(const json& messages, size_t from = 0) {
  std::string out;
  for (size_t i = from; i < messages.size(); ++i)
    if (messages[i]["role"] == "assistant") out += messages[i]["content"].get<std::string>();
  return out;
}

// (The key is a C string: a std::string parameter made GCC 14+ warn that the returned reference
// might dangle into the temporary built from the literal; it points into `row`.)
const json& require_key(const json& row, const char* key) {
  auto it = row.find(key);
  if (it == row.end()) throw DataError("missing key " + quoted(key));
  return *it;
}

void require_string_or_messages(const json& value, const std::string& key) {
  if (value.is_string()) return;
  if (!is_message_list(value))
    throw DataError("key " + quoted(key) + " must be a string or a list of messages");
  check_messages(value, key);
}

// A row is standard (strings) or conversational (message lists) as a whole: a prompt's messages
// with string responses would be rendered without the model's chat template (TRL refuses them).
void require_one_format(const json& prompt, const std::vector<std::pair<const char*, const json*>>& responses) {
  for (const auto& [key, value] : responses)
    if (is_message_list(prompt) != is_message_list(*value))
      throw DataError(std::string("key \"prompt\" is ") + (is_message_list(prompt) ? "a list of messages" : "a string") +
                      " but " + quoted(key) + " is " + (is_message_list(*value) ? "a list of messages" : "a string") +
                      ": give both as strings (standard), or both as lists of messages (conversational: a response as "
                      "[{\"role\": \"assistant\", \"content\": \"...\"}])");
}

std::string prompt_text(const json& value) {
  return value.is_string() ? value.get<std::string>() : render_messages(value, true);
}

std::string response_text(const json& value) {
  return value.is_string() ? value.get<std::string>() : assistant_text(value);
}

void require_row_object(const json& row) {
  if (!row.is_object()) throw DataError("row is not an object");
}

std::vector<ChatMessage> to_messages(const json& messages, size_t from = 0, size_t to = std::string::npos) {
  std::vector<ChatMessage> out;
  for (size_t i = from; i < messages.size() && i < to; ++i)
    out.push_back({messages[i]["role"].get<std::string>(), messages[i]["content"].get<std::string>()});
  return out;
}

// TRL's implicit prompt: the messages both conversations share are the prompt.
PreferenceExample split_implicit_prompt(const json& chosen, const json& rejected) {
  size_t shared = 0;
  while (shared < chosen.size() && shared < rejected.size() && chosen[shared] == rejected[shared])
    ++shared;
  json prompt = json::array();
  for (size_t i = 0; i < shared; ++i) prompt.push_back(chosen[i]);
  PreferenceExample ex{render_messages(prompt, true), assistant_text(chosen, shared),
                       assistant_text(rejected, shared)};
  ex.prompt_messages = to_messages(chosen, 0, shared);
  ex.chosen_messages = to_messages(chosen, shared);
  ex.rejected_messages = to_messages(rejected, shared);
  return ex;
}

// TRL's implicit prompt for strings (an Anthropic HH-RLHF row: "\n\nHuman: ...\n\nAssistant: ..."
// twice): the text both share is the prompt, less a space just before where they part, which
// starts both responses (trl.extract_prompt). Compared by code point, as Python compares strings;
// where one string is the other's start, TRL's loop leaves the split at the shorter one's last
// character, and so does this.
PreferenceExample split_implicit_prompt(const std::string& chosen, const std::string& rejected) {
  const size_t shortest = std::min(chosen.size(), rejected.size());
  size_t split = 0;
  while (split < shortest && chosen[split] == rejected[split]) ++split;
  const bool parted = split < shortest;
  if (!parted && shortest > 0) split = shortest - 1;
  while (split > 0 && (static_cast<unsigned char>(chosen[split]) & 0xC0) == 0x80) --split;  // a code point's start
  if (parted && split > 0 && chosen[split - 1] == ' ') --split;
  if (split == 0)
    throw DataError("missing key \"prompt\": chosen and rejected share no text to take as their prompt (give the "
                    "prompt as \"prompt\", or write the prompt at the start of both, as Anthropic's HH-RLHF rows)");
  return {chosen.substr(0, split), chosen.substr(split), rejected.substr(split)};
}

// nlohmann's what() reads "[json.exception.parse_error.101] parse error at line 1, column 7:
// ..."; the id means nothing to a reader and a JSONL row is always "line 1" of its own parse.
std::string short_parse_message(const json::parse_error& e, bool single_line) {
  std::string msg = e.what();
  if (msg.rfind("[json.exception.", 0) == 0) {
    size_t close = msg.find("] ");
    if (close != std::string::npos) msg = msg.substr(close + 2);
  }
  const std::string one_line_prefix = "parse error at line 1, ";
  if (single_line && msg.rfind(one_line_prefix, 0) == 0) msg = msg.substr(one_line_prefix.size());
  // "last read" echoes the offending text, which can be a whole long line.
  const size_t max_len = 200;
  if (msg.size() > max_len) msg = msg.substr(0, max_len) + "...";
  return msg;
}

std::string read_whole_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw DataError("cannot open dataset " + path + ": it is a directory, not a JSONL/JSON file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("cannot open dataset " + path + ": " + std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) throw DataError("cannot open dataset " + path + ": read failed");
  return buf.str();
}

// Calls `handle(line_number, row)` for every row; `line_number` is the physical line (JSONL)
// or element index + 1 (JSON array). Parse failures of a JSONL line go to `bad`.
void for_each_row(const std::string& path, const std::string& text, bool& is_array,
                  const std::function<void(int64_t, const json&)>& handle,
                  const std::function<void(int64_t, const std::string&)>& bad) {
  size_t start = 0;
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) start = 3;  // editors on Windows add a BOM
  size_t first = text.find_first_not_of(" \t\r\n", start);
  is_array = first != std::string::npos && text[first] == '[';

  if (is_array) {
    json all;
    try {
      all = json::parse(text.begin() + static_cast<std::ptrdiff_t>(start), text.end());
    } catch (const json::parse_error& e) {
      // One syntax error makes the whole array unreadable, so there is nothing to skip to.
      throw DataError(path + ": invalid JSON: " + short_parse_message(e, false) +
                      ". Fix the file (a JSON array cannot be read past a syntax error), or "
                      "write one object per line (JSONL).");
    }
    for (size_t i = 0; i < all.size(); ++i) handle(static_cast<int64_t>(i + 1), all[i]);
    return;
  }

  int64_t line_number = 0;
  size_t pos = start;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    ++line_number;
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    json row;
    try {
      row = json::parse(line);
    } catch (const json::parse_error& e) {
      bad(line_number, "invalid JSON: " + short_parse_message(e, true));
      continue;
    }
    handle(line_number, row);
  }
}

template <typename T>
LoadResult<T> load_file(const std::string& path, const std::string& on_bad_line,
                        T (*parse_row)(const json&), const std::string& expected_format) {
  if (on_bad_line != "error" && on_bad_line != "skip")
    throw ConfigError("data.on_bad_line must be \"error\" or \"skip\", got \"" + on_bad_line +
                      "\"");
  const bool skip = on_bad_line == "skip";
  const std::string text = read_whole_file(path);
  // UTF-16 / UTF-32 text (PowerShell 5's `>` and Notepad's "Unicode" write UTF-16) would read as
  // a bad line per line, "invalid literal" each, with one more for the last newline's zero byte.
  const auto starts_with = [&text](const char* bom, size_t n) { return text.compare(0, n, bom, n) == 0; };
  const char* wide = starts_with("\xFF\xFE\x00\x00", 4) || starts_with("\x00\x00\xFE\xFF", 4) ? "UTF-32"
                     : starts_with("\xFF\xFE", 2) || starts_with("\xFE\xFF", 2)                 ? "UTF-16"
                                                                                                : nullptr;
  if (wide)
    throw DataError("dataset " + path + " is " + wide + " text (it starts with a " + wide +
                    " byte order mark); JSONL and JSON files are read as UTF-8: convert it (iconv -f " + wide +
                    " -t UTF-8, or PowerShell's Out-File -Encoding utf8)");

  LoadResult<T> result;
  bool is_array = false;
  auto bad = [&](int64_t line, const std::string& reason) {
    if (!skip) {
      std::string where = is_array ? path + ": element " + std::to_string(line)
                                   : path + ":" + std::to_string(line);
      throw DataError(where + ": " + reason + ". Fix the " + (is_array ? "element" : "line") +
                      " or set data.on_bad_line = \"skip\".");
    }
    result.bad_lines.push_back({line, reason});
  };
  auto handle = [&](int64_t line, const json& row) {
    try {
      result.rows.push_back(parse_row(row));
    } catch (const DataError& e) {
      bad(line, e.what());
    }
  };
  for_each_row(path, text, is_array, handle, bad);
  result.json_array = is_array;

  if (result.rows.empty()) {
    std::string msg = "dataset " + path + " has no usable rows";
    if (!result.bad_lines.empty()) {
      const BadLine& b = result.bad_lines.front();
      msg += " (" + std::to_string(result.bad_lines.size()) + " bad lines skipped; first: " +
             (is_array ? "element " : "line ") + std::to_string(b.line) + ": " + b.reason + ")";
    }
    throw DataError(msg + ". Expected JSONL or a JSON array of objects like " + expected_format +
                    ".");
  }
  return result;
}

}  // namespace

std::string render_messages(const json& messages, bool add_generation_prompt) {
  check_messages(messages, "messages");
  std::string out;
  for (const json& m : messages)
    out += "<|" + m["role"].get<std::string>() + "|>\n" + m["content"].get<std::string>() + "\n";
  if (add_generation_prompt) out += "<|assistant|>\n";
  return out;
}

PreferenceExample preference_from_json(const json& row) {
  require_row_object(row);
  const json& chosen = require_key(row, "chosen");
  const json& rejected = require_key(row, "rejected");
  require_string_or_messages(chosen, "chosen");
  require_string_or_messages(rejected, "rejected");

  PreferenceExample ex;
  auto prompt = row.find("prompt");
  if (prompt != row.end()) {
    require_string_or_messages(*prompt, "prompt");
    require_one_format(*prompt, {{"chosen", &chosen}, {"rejected", &rejected}});
    ex = {prompt_text(*prompt), response_text(chosen), response_text(rejected)};
    if (is_message_list(*prompt)) {
      ex.prompt_messages = to_messages(*prompt);
      ex.chosen_messages = to_messages(chosen);
      ex.rejected_messages = to_messages(rejected);
    }
  } else if (is_message_list(chosen) && is_message_list(rejected)) {
    ex = split_implicit_prompt(chosen, rejected);
  } else if (chosen.is_string() && rejected.is_string()) {
    ex = split_implicit_prompt(chosen.get<std::string>(), rejected.get<std::string>());
  } else {
    throw DataError(
        "missing key \"prompt\" (rows without a prompt need chosen and rejected both as strings or both as message "
        "lists, which start with the prompt they share)");
  }

  if (ex.chosen.empty()) throw DataError("empty chosen response");
  if (ex.rejected.empty()) throw DataError("empty rejected response");
  // Such a pair has zero preference margin by construction and only adds noise.
  if (ex.chosen == ex.rejected) throw DataError("chosen and rejected are identical");
  return ex;
}

SftExample sft_from_json(const json& row) {
  require_row_object(row);
  SftExample ex;
  if (auto messages = row.find("messages"); messages != row.end()) {
    check_messages(*messages, "messages");
    if (messages->empty() || messages->back()["role"] != "assistant")
      throw DataError("the last message in \"messages\" must have role \"assistant\"");
    json prompt(messages->begin(), messages->end() - 1);
    ex = {render_messages(prompt, true), messages->back()["content"].get<std::string>()};
    ex.prompt_messages = to_messages(*messages, 0, messages->size() - 1);
    ex.completion_messages = to_messages(*messages, messages->size() - 1);
  } else if (row.contains("prompt") || row.contains("completion")) {
    const json& prompt = require_key(row, "prompt");
    const json& completion = require_key(row, "completion");
    require_string_or_messages(prompt, "prompt");
    require_string_or_messages(completion, "completion");
    require_one_format(prompt, {{"completion", &completion}});
    ex = {prompt_text(prompt), response_text(completion)};
    if (is_message_list(prompt)) {
      ex.prompt_messages = to_messages(prompt);
      ex.completion_messages = to_messages(completion);
    }
  } else if (auto text = row.find("text"); text != row.end()) {
    if (!text->is_string()) throw DataError("key \"text\" must be a string");
    ex = {"", text->get<std::string>()};
  } else {
    throw DataError(
        "missing key \"completion\" (an SFT row needs \"prompt\" and \"completion\", \"text\", "
        "or \"messages\")");
  }
  if (ex.completion.empty()) throw DataError("empty completion");
  return ex;
}

LoadResult<PreferenceExample> load_preference_file(const std::string& path,
                                                   const std::string& on_bad_line) {
  return load_file<PreferenceExample>(path, on_bad_line, &preference_from_json,
                                      "{\"prompt\": ..., \"chosen\": ..., \"rejected\": ...}");
}

LoadResult<SftExample> load_sft_file(const std::string& path, const std::string& on_bad_line) {
  return load_file<SftExample>(path, on_bad_line, &sft_from_json,
                               "{\"prompt\": ..., \"completion\": ...} or {\"text\": ...}");
}

void write_preference_jsonl(const std::vector<PreferenceExample>& rows, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw DataError("cannot write dataset " + path + ": " + std::strerror(errno));
  for (const PreferenceExample& r : rows) {
    json row = {{"prompt", r.prompt}, {"chosen", r.chosen}, {"rejected", r.rejected}};
    // Replace invalid UTF-8 instead of throwing: generated text may be cut mid-character.
    out << row.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
  }
  out.close();
  if (!out) throw DataError("cannot write dataset " + path + ": write failed (disk full?)");
}

void apply_chat_template(std::vector<PreferenceExample>& rows, const ChatTemplate& tmpl, const std::string& source) {
  for (size_t i = 0; i < rows.size(); ++i) {
    auto& ex = rows[i];
    if (!ex.conversational()) continue;
    const PreferenceText t = tmpl.render_preference(ex.prompt_messages, ex.chosen_messages, ex.rejected_messages,
                                                    source + " row " + std::to_string(i + 1));
    ex.prompt = t.prompt;
    ex.chosen = t.chosen;
    ex.rejected = t.rejected;
  }
}

void apply_chat_template(std::vector<SftExample>& rows, const ChatTemplate& tmpl, const std::string& source) {
  for (size_t i = 0; i < rows.size(); ++i) {
    auto& ex = rows[i];
    if (!ex.conversational()) continue;
    // An SFT row is a preference row with one completion: the same prompt / completion split.
    const PreferenceText t = tmpl.render_preference(ex.prompt_messages, ex.completion_messages,
                                                    ex.completion_messages, source + " row " + std::to_string(i + 1));
    ex.prompt = t.prompt;
    ex.completion = t.chosen;
  }
}

}  // namespace ganpo
