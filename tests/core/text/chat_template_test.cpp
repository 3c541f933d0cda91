// Chat templates against the real templates rendered by Python jinja2 the way transformers does
// (tests/core/text/chat_template_cases.json, made by make_chat_template_fixtures.py from the
// template texts in tests/core/text/chat_templates/).
#include "core/text/chat_template.h"

#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#ifndef GANPO_SOURCE_DIR
#error "GANPO_SOURCE_DIR must name the source tree (tests/core/CMakeLists.txt defines it)"
#endif

namespace ganpo {
namespace {

using nlohmann::json;

const std::string kDir = std::string(GANPO_SOURCE_DIR) + "/tests/core/text";

json load_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

const json& cases() {
  static const json j = load_json(kDir + "/chat_template_cases.json");
  return j;
}

// (A C string, so no temporary std::string makes GCC 14+ suspect the returned reference.)
const json& fixture(const char* file) {
  static std::map<std::string, json> cache;
  auto it = cache.find(file);
  if (it == cache.end()) it = cache.emplace(file, load_json(kDir + "/chat_templates/" + file)).first;
  return it->second;
}

std::string token(const json& f, const char* key) {
  return f.contains(key) && f[key].is_string() ? f[key].get<std::string>() : std::string();
}

ChatTemplate template_for(const std::string& file) {
  const json& f = fixture(file.c_str());
  return ChatTemplate::resolve(f["chat_template"].get<std::string>(), "", token(f, "bos_token"), token(f, "eos_token"));
}

std::vector<ChatMessage> messages_of(const json& list) {
  std::vector<ChatMessage> out;
  for (const auto& m : list) out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  return out;
}

std::vector<std::string> fixture_files() {
  std::set<std::string> files;
  for (const auto& r : cases()["renders"]) files.insert(r["template"].get<std::string>());
  return {files.begin(), files.end()};
}

ChatTemplateOptions options_of(const json& entry) {
  ChatTemplateOptions o;
  o.today = cases()["today"].get<std::string>();
  if (entry.contains("options")) {
    const json& opts = entry["options"];
    if (opts.contains("date_string")) o.date_string = opts["date_string"].get<std::string>();
    if (opts.contains("enable_thinking")) o.enable_thinking = opts["enable_thinking"].get<bool>();
  }
  return o;
}

// Compares one rendering with what Python produced: the same text, or the same error.
void expect_outcome(const ChatTemplate& t, const std::vector<ChatMessage>& messages, bool gen, bool cont,
                    const json& expected, const std::string& label) {
  SCOPED_TRACE(label);
  if (messages.empty()) {
    // Empty conversations are always refused here (most real templates fail on them too).
    EXPECT_THROW(t.render(messages, gen, cont, label), DataError);
    return;
  }
  if (expected.contains("text")) {
    std::string got;
    try {
      got = t.render(messages, gen, cont, label);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "threw " << e.what();
      return;
    }
    EXPECT_EQ(got, expected["text"].get<std::string>());
    return;
  }
  try {
    const std::string got = t.render(messages, gen, cont, label);
    ADD_FAILURE() << "rendered " << json(got).dump() << " but Python raised " << expected["error"];
  } catch (const ChatTemplateError& e) {
    EXPECT_EQ(e.upstream_message(), expected["error"].get<std::string>());
    EXPECT_NE(std::string(e.what()).find(label + ": "), std::string::npos) << e.what();
  }
}

TEST(ChatTemplate, RecognisesEveryRealTemplate) {
  std::set<std::string> covered;
  for (const auto& file : fixture_files()) {
    const json& f = fixture(file.c_str());
    const std::string text = f["chat_template"].get<std::string>();
    EXPECT_EQ(ChatTemplate::recognise(text), f["variant"].get<std::string>()) << file;
    const ChatTemplate t = template_for(file);
    EXPECT_EQ(t.variant(), f["variant"].get<std::string>()) << file;
    EXPECT_TRUE(t.recognised()) << file;
    covered.insert(t.variant());
  }
  // Every variant the renderer offers is checked against at least one real template.
  for (const auto& v : ChatTemplate::variants()) EXPECT_TRUE(covered.count(v.name)) << v.name << " has no fixture";
}

TEST(ChatTemplate, FamiliesOfVariants) {
  EXPECT_EQ(template_for("llama3.1.json").family(), "llama3");
  EXPECT_EQ(template_for("llama3.2.json").family(), "llama3");
  EXPECT_EQ(template_for("gemma3.json").family(), "gemma");
  EXPECT_EQ(template_for("qwen2.5.json").family(), "chatml");
  EXPECT_EQ(template_for("qwen3.json").family_id(), ChatTemplateFamily::qwen3);
  EXPECT_EQ(template_for("llama2-codellama.json").variant(), "llama2");
  EXPECT_EQ(template_for("mistral-v3.json").family(), "mistral");
}

TEST(ChatTemplate, AChangedTemplateIsNotRecognised) {
  const std::string text = fixture("llama3.json")["chat_template"].get<std::string>();
  EXPECT_EQ(ChatTemplate::recognise(text + "\n"), "llama3");  // Jinja drops one trailing newline
  EXPECT_EQ(ChatTemplate::recognise(text + "\n\n"), "");
  EXPECT_EQ(ChatTemplate::recognise(text + " "), "");
  std::string edited = text;
  edited[edited.find("trim")] = 'T';
  EXPECT_EQ(ChatTemplate::recognise(edited), "");
  EXPECT_EQ(ChatTemplate::recognise(""), "");
}

TEST(ChatTemplate, RendersLikeTransformers) {
  int checked = 0;
  for (const auto& r : cases()["renders"]) {
    const std::string file = r["template"].get<std::string>();
    const std::string conv = r["conversation"].get<std::string>();
    ChatTemplate t = template_for(file);
    t.set_options(options_of(r));
    const auto messages = messages_of(cases()["conversations"][conv]);
    const std::string label = file + " " + conv + (r.contains("options") ? " " + r["options"].dump() : "");
    expect_outcome(t, messages, false, false, r["no_gen"], label + " (no generation prompt)");
    json gen = r["gen"];
    if (gen.contains("no_gen_plus")) {
      gen = json{{"text", r["no_gen"]["text"].get<std::string>() + gen["no_gen_plus"].get<std::string>()}};
    }
    expect_outcome(t, messages, true, false, gen, label + " (generation prompt)");
    if (r.contains("continue_final_message")) {
      expect_outcome(t, messages, false, true, r["continue_final_message"], label + " (continue final message)");
    }
    ++checked;
  }
  EXPECT_GT(checked, 400);
}

TEST(ChatTemplate, SplitsPreferenceRowsLikeTrl) {
  int checked = 0;
  for (const auto& p : cases()["preferences"]) {
    const std::string file = p["template"].get<std::string>();
    const std::string row_name = p["row"].get<std::string>();
    SCOPED_TRACE(file + " " + row_name);
    ChatTemplate t = template_for(file);
    ChatTemplateOptions o;
    o.today = cases()["today"].get<std::string>();
    t.set_options(o);
    const json& row = cases()["preference_rows"][row_name];
    const auto prompt = messages_of(row["prompt"]);
    const auto chosen = messages_of(row["chosen"]);
    const auto rejected = messages_of(row["rejected"]);
    if (p.contains("error")) {
      try {
        t.render_preference(prompt, chosen, rejected, "row 3");
        ADD_FAILURE() << "no error, Python raised " << p["error"];
      } catch (const ChatTemplateError& e) {
        EXPECT_EQ(e.upstream_message(), p["error"].get<std::string>());
        EXPECT_EQ(std::string(e.what()).rfind("row 3", 0), 0u) << e.what();
      }
      ++checked;
      continue;
    }
    const PreferenceText out = t.render_preference(prompt, chosen, rejected, "row 3");
    EXPECT_EQ(out.prompt, p["prompt_text"].get<std::string>());
    EXPECT_EQ(out.chosen, p["chosen_text"].get<std::string>());
    EXPECT_EQ(out.rejected, p["rejected_text"].get<std::string>());
    EXPECT_EQ(out.prompt_trimmed, p["prompt_trimmed"].get<bool>());
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(cases()["preferences"].size()));
  EXPECT_GT(checked, 100);
}

// A few renderings written out by hand, so that a wrong fixture file cannot hide a wrong renderer.
TEST(ChatTemplate, HandCheckedRenderings) {
  const std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", " Hi "}};
  EXPECT_EQ(template_for("llama3.json").render({{"user", " Hi "}}, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(template_for("qwen2.5.json").render({{"user", "Hi"}}, true),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(template_for("gemma3.json").render(chat, true),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
  // strip() applies to the whole "<<SYS>>...<</SYS>>\n\n" + message, so the user's leading space stays.
  EXPECT_EQ(template_for("llama2.json").render(chat, false), "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST]");
  EXPECT_EQ(template_for("mistral-v3.json").render(chat, false), "<s>[INST] Be brief.\n\n Hi [/INST]");
  const PreferenceText qwen3 =
      template_for("qwen3.json").render_preference({{"user", "Q"}}, {{"assistant", "A"}}, {{"assistant", "B"}});
  EXPECT_EQ(qwen3.prompt, "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(qwen3.chosen, "<think>\n\n</think>\n\nA<|im_end|>\n");
}

// The playground wraps a typed prompt as a user turn, but leaves a prompt rendered from
// conversational data (the run's sample prompts) as it is.
TEST(ChatTemplate, UserTurnWrapsTypedTextOnce) {
  for (const std::string& file : fixture_files()) {
    const ChatTemplate t = template_for(file);
    const std::string wrapped = t.user_turn("Name three fruits.");
    EXPECT_EQ(wrapped, t.render({{"user", "Name three fruits."}}, true)) << file;
    EXPECT_EQ(t.user_turn(wrapped), wrapped) << file;
    try {
      const std::string with_system = t.render({{"system", "Be brief."}, {"user", "Hi"}}, true);
      EXPECT_EQ(t.user_turn(with_system), with_system) << file;
    } catch (const ChatTemplateError&) {
      // this template refuses a system turn
    }
    if (!t.bos_token().empty() && wrapped.rfind(t.bos_token(), 0) == 0) {
      const std::string no_bos = wrapped.substr(t.bos_token().size());
      EXPECT_EQ(t.user_turn(no_bos), no_bos) << file;
    }
  }
}

TEST(ChatTemplate, CommonPrefixNeverSplitsACharacter) {
  // mistral-v3 renders the system prompt only when the conversation ends with a user turn, so the
  // prompt alone and prompt + answer part ways right after "[INST] ", inside "é" vs "ê".
  const PreferenceText out = template_for("mistral-v3.json")
                                 .render_preference({{"system", "é"}, {"user", "ê"}}, {{"assistant", "a"}},
                                                    {{"assistant", "b"}});
  EXPECT_EQ(out.prompt, "<s>[INST] ");
  EXPECT_EQ(out.chosen, "ê[/INST] a</s>");
  EXPECT_TRUE(out.prompt_trimmed);
}

TEST(ChatTemplate, TrimsPythonWhitespaceOnly) {
  // U+3000 and U+00A0 are str.isspace(); U+200B (zero width space) is not.
  const ChatTemplate t = template_for("llama3.json");
  EXPECT_EQ(t.render({{"user", "\xe3\x80\x80\xc2\xa0x\xe2\x80\x8b"}}, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nx\xe2\x80\x8b<|eot_id|>");
  // Invalid UTF-8 is kept as it is, never a crash.
  EXPECT_EQ(t.render({{"user", " \xff\xc3 "}}, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n\xff\xc3<|eot_id|>");
}

TEST(ChatTemplate, OverrideByName) {
  const json& l31 = fixture("llama3.1.json");
  const std::string text = l31["chat_template"].get<std::string>();
  // A family name keeps the model's own variant of that family.
  EXPECT_EQ(ChatTemplate::resolve(text, "llama3", "<|begin_of_text|>", "<|eot_id|>").variant(), "llama3.1");
  // A variant name is taken as it is.
  const ChatTemplate chosen = ChatTemplate::resolve(text, "chatml", "", "");
  EXPECT_EQ(chosen.variant(), "chatml");
  EXPECT_FALSE(chosen.recognised());
  // No template, or one we do not know, rendered as the named variant on purpose.
  const ChatTemplate named = ChatTemplate::resolve("", "mistral-v3", "<s>", "</s>");
  EXPECT_EQ(named.variant(), "mistral-v3");
  EXPECT_EQ(named.render({{"user", "Hi"}}, true), "<s>[INST] Hi[/INST]");
  EXPECT_EQ(ChatTemplate::resolve("{{ custom }}", "gemma", "<bos>", "<eos>").variant(), "gemma");
  EXPECT_EQ(ChatTemplate::resolve("{{ custom }}", "qwen3", "", "").variant(), "qwen3");
}

TEST(ChatTemplate, UnknownOverrideNamesTheKey) {
  try {
    ChatTemplate::resolve("", "vicuna", "", "");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("data.chat_template"), std::string::npos) << what;
    EXPECT_NE(what.find("\"vicuna\""), std::string::npos) << what;
    EXPECT_NE(what.find("llama3.1"), std::string::npos) << what;
  }
}

TEST(ChatTemplate, UnrecognisedTemplateIsAConfigError) {
  std::string text = fixture("llama3.json")["chat_template"].get<std::string>();
  text.insert(0, " ");
  try {
    ChatTemplate::resolve(text, "", "<|begin_of_text|>", "<|eot_id|>");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("data.chat_template", 0), 0u) << what;
    EXPECT_NE(what.find("Llama 3"), std::string::npos) << what;  // what it resembles
    for (const char* name : {"llama3", "gemma", "chatml", "qwen3", "llama2", "mistral", "qwen2.5", "mistral-v3"}) {
      EXPECT_NE(what.find(name), std::string::npos) << name << " missing from: " << what;
    }
  }
  EXPECT_THROW(ChatTemplate::resolve("{{ messages }}", "", "", ""), ConfigError);
  try {
    ChatTemplate::resolve("", "", "", "");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("no chat template"), std::string::npos) << e.what();
  }
}

TEST(ChatTemplate, ErrorsSayWhereAndWhy) {
  const ChatTemplate gemma = template_for("gemma.json");
  try {
    gemma.render({{"system", "S"}, {"user", "U"}}, true, false, "train.jsonl line 7");
    FAIL() << "no error";
  } catch (const ChatTemplateError& e) {
    EXPECT_EQ(e.upstream_message(), "System role not supported");
    EXPECT_EQ(std::string(e.what()),
              "train.jsonl line 7: the gemma chat template rejects this conversation: System role not supported");
  }
  try {
    gemma.render({}, true, false, "train.jsonl line 8");
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("train.jsonl line 8: ", 0), 0u) << e.what();
  }
  EXPECT_THROW(template_for("chatml.json").render({{"user", "a"}}, true, true, ""), ChatTemplateError);
  try {
    template_for("chatml.json").render_preference({{"user", "a"}, {"system", "b"}}, {}, {});
    FAIL() << "no error";
  } catch (const ChatTemplateError& e) {
    EXPECT_EQ(e.upstream_message(), "Invalid role in the last message: system");
  }
  EXPECT_THROW(template_for("chatml.json").render_preference({}, {{"assistant", "a"}}, {{"assistant", "b"}}),
               DataError);
}

// A tokenizer without a bos / eos token (transformers leaves it out of the template's variables):
// printed alone it is nothing, added to text it fails as jinja2's UndefinedError does, where it
// would be added. (Found by a randomized comparison with jinja2 renderings; 420,000 cases with
// the fixtures' own tokens agreed.)
TEST(ChatTemplate, AMissingSpecialTokenFailsWhereTheTemplateAddsIt) {
  const auto text = [](const char* file) { return fixture(file)["chat_template"].get<std::string>(); };
  const auto upstream_of = [](const ChatTemplate& t, const std::vector<ChatMessage>& m) -> std::string {
    try {
      t.render(m, false, false, "row 3");
    } catch (const ChatTemplateError& e) {
      EXPECT_NE(std::string(e.what()).find("tokenizer_config.json"), std::string::npos) << e.what();
      return e.upstream_message();
    }
    return "";
  };
  const std::vector<ChatMessage> user{{"user", "hi"}}, turn{{"user", "hi"}, {"assistant", "yo"}};
  EXPECT_EQ(upstream_of(ChatTemplate::resolve(text("llama3.json"), "", "", "<|eot_id|>"), user), "'bos_token' is undefined");
  EXPECT_EQ(upstream_of(ChatTemplate::resolve(text("llama2.json"), "", "", "</s>"), user), "'bos_token' is undefined");
  EXPECT_EQ(upstream_of(ChatTemplate::resolve(text("llama2.json"), "", "<s>", ""), turn), "'eos_token' is undefined");
  const ChatTemplate v3 = ChatTemplate::resolve(text("mistral-v3.json"), "", "<s>", "");
  EXPECT_EQ(v3.render(user, false), "<s>[INST] hi[/INST]") << "no eos added: renders";
  EXPECT_EQ(upstream_of(v3, turn), "'eos_token' is undefined");
  // Printed alone: nothing.
  EXPECT_EQ(ChatTemplate::resolve(text("gemma.json"), "", "", "<eos>").render(user, false),
            "<start_of_turn>user\nhi<end_of_turn>\n");
  EXPECT_EQ(ChatTemplate::resolve(text("llama3.1.json"), "", "", "<|eot_id|>").render(user, false).rfind("<|start_header_id|>system", 0), 0u);

  // A folder whose bos is in special_tokens_map.json only (which wins, as in transformers): the
  // template has it.
  const auto folder = std::filesystem::temp_directory_path() / ("ganpo_chat_map_" + std::to_string(::getpid()));
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "tokenizer_config.json") << json{{"chat_template", text("llama3.json")}}.dump();
  std::ofstream(folder / "special_tokens_map.json") << R"({"bos_token": {"content": "<|begin_of_text|>"}})";
  EXPECT_EQ(ChatTemplate::from_model_folder(folder.string(), "").render(user, false).rfind("<|begin_of_text|>", 0), 0u);
  std::filesystem::remove_all(folder);
}

TEST(ChatTemplate, Llama32ReadsTheClockUnlessToldTheDate) {
  ChatTemplate t = template_for("llama3.2.json");
  const std::string now = t.render({{"user", "Hi"}}, false);
  // "Today Date: DD Mon YYYY" with an English month, whatever the process locale.
  const size_t at = now.find("\nToday Date: ");
  ASSERT_NE(at, std::string::npos) << now;
  const std::string date = now.substr(at + 13, 11);
  const std::string months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec";
  EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(date[0])) && std::isdigit(static_cast<unsigned char>(date[1])) &&
              date[2] == ' ' && months.find(date.substr(3, 3)) != std::string::npos && date[6] == ' ' &&
              date.substr(7, 2) == "20" && now.compare(at + 24, 3, "\n\n<") == 0)
      << now;
  ChatTemplateOptions o;
  o.today = "2024-12-25";
  t.set_options(o);
  EXPECT_NE(t.render({{"user", "Hi"}}, false).find("Today Date: 25 Dec 2024\n"), std::string::npos);
  o.date_string = "1 May 2030";
  t.set_options(o);
  EXPECT_NE(t.render({{"user", "Hi"}}, false).find("Today Date: 1 May 2030\n"), std::string::npos);
  o.today = "25/12/2024";
  EXPECT_THROW(t.set_options(o), Error);
}

TEST(ChatTemplate, FromTokenizerConfig) {
  const std::string text = fixture("gemma.json")["chat_template"].get<std::string>();
  json config = {{"bos_token", {{"content", "<bos>"}, {"lstrip", false}}}, {"eos_token", "<eos>"}, {"chat_template", text}};
  ChatTemplate t = ChatTemplate::from_tokenizer_config(config.dump(), "");
  EXPECT_EQ(t.variant(), "gemma");
  EXPECT_EQ(t.bos_token(), "<bos>");
  EXPECT_EQ(t.eos_token(), "<eos>");
  // Named templates: the "default" one counts.
  config["chat_template"] = json::array({{{"name", "tool_use"}, {"template", "{{ x }}"}}, {{"name", "default"}, {"template", text}}});
  EXPECT_EQ(ChatTemplate::from_tokenizer_config(config.dump(), "").variant(), "gemma");
  // chat_template.jinja wins over the config's template.
  const std::string qwen3 = fixture("qwen3.json")["chat_template"].get<std::string>();
  EXPECT_EQ(ChatTemplate::from_tokenizer_config(config.dump(), "", qwen3).variant(), "qwen3");
  EXPECT_THROW(ChatTemplate::from_tokenizer_config("{not json", ""), ModelFileError);
  EXPECT_THROW(ChatTemplate::from_model_folder("/nonexistent/model", ""), ModelFileError);
  EXPECT_THROW(ChatTemplate::from_tokenizer_config("{}", ""), ConfigError);
}

TEST(ChatTemplate, HostileTokenizerConfigsAreRefusedOrSkipped) {
  const std::string gemma = fixture("gemma.json")["chat_template"].get<std::string>();
  // A named template whose "name" is not a string is skipped (it used to escape as json's own
  // type_error, which no caller catches; found by tests/fuzz/fuzz_chat_template.cpp).
  json config = {{"chat_template", json::array({{{"name", 5}, {"template", "x"}}, {{"name", "default"}, {"template", gemma}}})}};
  EXPECT_EQ(ChatTemplate::from_tokenizer_config(config.dump(), "").variant(), "gemma");
  config["chat_template"] = json::array({{{"name", json::array()}}, 7, {{"name", "default"}, {"template", 3}}});
  EXPECT_THROW(ChatTemplate::from_tokenizer_config(config.dump(), ""), ConfigError);
  // A template that would never end in a Jinja interpreter is only compared with the verified
  // ones, never run: it is refused at once.
  config["chat_template"] = "{% for x in range(10**9) %}{{ x }}{% endfor %}{% macro f(n) %}{{ f(n+1) }}{% endmacro %}{{ f(0) }}";
  EXPECT_THROW(ChatTemplate::from_tokenizer_config(config.dump(), ""), ConfigError);
}

}  // namespace
}  // namespace ganpo
