#include "core/dataset_files.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tests/support/expect_contains.h"

namespace ganpo {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Every test gets its own folder so parallel ctest runs cannot see each other's files.
class DatasetFilesTest : public ::testing::Test {
protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    dir_ = fs::temp_directory_path() /
           ("ganpo_dataset_files_" + std::to_string(stamp) + "_" + std::to_string(counter++));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string write(const std::string& name, const std::string& content) {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

  // Runs `load` expecting a DataError and returns its message.
  template <typename F>
  static std::string error_of(F load) {
    try {
      load();
    } catch (const DataError& e) {
      return e.what();
    }
    ADD_FAILURE() << "expected a DataError";
    return "";
  }

  fs::path dir_;
};

const char* kGoodRow = R"({"prompt": "p", "chosen": "good", "rejected": "bad"})";

// ---------------------------------------------------------------- preference formats

TEST_F(DatasetFilesTest, ReadsStandardJsonl) {
  auto path = write("pref.jsonl",
                    R"({"prompt": "2+2=", "chosen": "4", "rejected": "5", "score_chosen": 9, "id": 1})"
                    "\n"
                    R"({"prompt": "", "chosen": "yes", "rejected": "no"})"
                    "\n");
  auto r = load_preference_file(path, "error");
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.rows[0].prompt, "2+2=");
  EXPECT_EQ(r.rows[0].chosen, "4");
  EXPECT_EQ(r.rows[0].rejected, "5");
  EXPECT_EQ(r.rows[1].prompt, "");
  EXPECT_TRUE(r.bad_lines.empty());
}

TEST_F(DatasetFilesTest, ReadsJsonArray) {
  auto path = write("pref.json", R"(
    [
      {"prompt": "a", "chosen": "b", "rejected": "c"},
      {"prompt": "d", "chosen": "e", "rejected": "f"}
    ])");
  auto r = load_preference_file(path, "error");
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.rows[1].prompt, "d");
  EXPECT_EQ(r.rows[1].rejected, "f");
}

// A UTF-16 file (PowerShell 5's `>`) is named as such, not reported as a bad line per line.
TEST_F(DatasetFilesTest, Utf16FileIsNamedAsSuch) {
  std::string text = "\xFF\xFE";
  for (char ch : std::string(kGoodRow) + "\n") text += std::string{ch, '\0'};
  const auto path = write("pref.jsonl", text);
  const std::string message = error_of([&] { load_preference_file(path, "skip"); });
  EXPECT_CONTAINS(message, "UTF-16");
  EXPECT_EQ(message.find("bad lines"), std::string::npos) << message;
}

TEST_F(DatasetFilesTest, JsonArrayBadElementIsNumberedByIndex) {
  auto path = write("pref.json", R"([{"prompt": "a", "chosen": "b", "rejected": "c"}, 7])");
  auto r = load_preference_file(path, "skip");
  ASSERT_EQ(r.rows.size(), 1u);
  ASSERT_EQ(r.bad_lines.size(), 1u);
  EXPECT_EQ(r.bad_lines[0].line, 2);
  EXPECT_EQ(r.bad_lines[0].reason, "row is not an object");
  EXPECT_TRUE(r.json_array) << "its bad rows are numbered by element, not by line";
  EXPECT_FALSE(load_preference_file(write("pref.jsonl", std::string(kGoodRow) + "\n"), "skip").json_array);
  EXPECT_CONTAINS(error_of([&] { load_preference_file(path, "error"); }), "element 2");
}

TEST_F(DatasetFilesTest, JsonArraySyntaxErrorFailsEvenWhenSkipping) {
  auto path = write("pref.json", R"([{"prompt": "a", "chosen": "b", "rejected": "c"},)");
  std::string msg = error_of([&] { load_preference_file(path, "skip"); });
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "invalid JSON");
}

TEST_F(DatasetFilesTest, ConversationalWithExplicitPrompt) {
  json row = {
      {"prompt", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}}},
      {"chosen", {{{"role", "assistant"}, {"content", "Hello."}}}},
      {"rejected", {{{"role", "assistant"}, {"content", "Go away."}}}}};
  auto path = write("conv.jsonl", row.dump() + "\n");
  auto r = load_preference_file(path, "error");
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].prompt, "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n");
  EXPECT_EQ(r.rows[0].chosen, "Hello.");
  EXPECT_EQ(r.rows[0].rejected, "Go away.");
}

// With a model's chat template the same row renders as TRL's apply_chat_template does: the
// prompt with the generation prompt, the completions as what the full conversation adds.
TEST_F(DatasetFilesTest, ConversationalRowsRenderWithTheModelsChatTemplate) {
  json row = {
      {"prompt", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}}},
      {"chosen", {{{"role", "assistant"}, {"content", "Hello."}}}},
      {"rejected", {{{"role", "assistant"}, {"content", "Go away."}}}}};
  json standard = {{"prompt", "Hi"}, {"chosen", "a"}, {"rejected", "b"}};
  auto path = write("conv.jsonl", row.dump() + "\n" + standard.dump() + "\n");
  auto r = load_preference_file(path, "error");
  ASSERT_EQ(r.rows.size(), 2u);
  ASSERT_TRUE(r.rows[0].conversational());
  ASSERT_FALSE(r.rows[1].conversational());
  const auto tmpl = ChatTemplate::resolve("", "llama3", "<|begin_of_text|>", "<|eot_id|>");
  apply_chat_template(r.rows, tmpl, path);
  EXPECT_EQ(r.rows[0].prompt,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(r.rows[0].chosen, "Hello.<|eot_id|>");
  EXPECT_EQ(r.rows[0].rejected, "Go away.<|eot_id|>");
  EXPECT_EQ(r.rows[1].prompt, "Hi");  // standard rows are left as they are

  std::vector<SftExample> sft{SftExample("plain", "text")};
  sft.push_back(SftExample("", ""));
  sft[1].prompt_messages = {{"user", "Hi"}};
  sft[1].completion_messages = {{"assistant", "Hello."}};
  apply_chat_template(sft, tmpl, path);
  EXPECT_EQ(sft[0].prompt, "plain");
  EXPECT_EQ(sft[1].completion, "Hello.<|eot_id|>");
}

TEST_F(DatasetFilesTest, ConversationalImplicitPromptIsTheSharedPrefix) {
  json user = {{"role", "user"}, {"content", "Capital of France?"}};
  json row = {{"chosen", {user, {{"role", "assistant"}, {"content", "Paris"}}}},
              {"rejected", {user, {{"role", "assistant"}, {"content", "Lyon"}}}}};
  auto path = write("implicit.jsonl", row.dump() + "\n");
  auto r = load_preference_file(path, "error");
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].prompt, "<|user|>\nCapital of France?\n<|assistant|>\n");
  EXPECT_EQ(r.rows[0].chosen, "Paris");
  EXPECT_EQ(r.rows[0].rejected, "Lyon");
}

// Strings without a prompt (Anthropic's HH-RLHF rows) split as trl.extract_prompt splits them:
// the shared text, less a space just before where they part; the values are Python's.
TEST_F(DatasetFilesTest, StandardImplicitPromptIsTheSharedTextAsTrlSplitsIt) {
  const auto split = [](const std::string& chosen, const std::string& rejected) {
    const PreferenceExample ex = preference_from_json(json{{"chosen", chosen}, {"rejected", rejected}});
    EXPECT_TRUE(ex.prompt_messages.empty()) << "a standard row";
    return std::vector<std::string>{ex.prompt, ex.chosen, ex.rejected};
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(split("\n\nHuman: What is 2+2?\n\nAssistant: It is 4.", "\n\nHuman: What is 2+2?\n\nAssistant: Five."),
            (V{"\n\nHuman: What is 2+2?\n\nAssistant:", " It is 4.", " Five."}));
  EXPECT_EQ(split("\n\nHuman: Hi\n\nAssistant: I think so", "\n\nHuman: Hi\n\nAssistant: I don't"),
            (V{"\n\nHuman: Hi\n\nAssistant: I", " think so", " don't"}))
      << "the responses' shared start is the prompt's, as in TRL";
  EXPECT_EQ(split("Prix: caf\u00e9 cr\u00e8me", "Prix: caf\u00e9 cr\u00e0me"), (V{"Prix: caf\u00e9 cr", "\u00e8me", "\u00e0me"}))
      << "by code point: \u00e8 and \u00e0 share their first byte";
  EXPECT_EQ(split("Q: \u00e9", "Q: \u00e8"), (V{"Q:", " \u00e9", " \u00e8"}));
  EXPECT_EQ(split("Say a: aaa", "Say a: aa"), (V{"Say a: a", "aa", "a"})) << "one the other's start: TRL's loop end";

  auto path = write("hh.jsonl", json{{"chosen", "\n\nHuman: Hi\n\nAssistant: Hello."}, {"rejected", "\n\nHuman: Hi\n\nAssistant: Go."}}.dump() + "\n");
  auto r = load_preference_file(path, "error");
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].prompt, "\n\nHuman: Hi\n\nAssistant:");
  EXPECT_EQ(r.rows[0].chosen, " Hello.");
}

TEST_F(DatasetFilesTest, ImplicitPromptSpansSharedMultiTurnHistory) {
  json u1 = {{"role", "user"}, {"content", "Hi"}};
  json a1 = {{"role", "assistant"}, {"content", "Hello"}};
  json u2 = {{"role", "user"}, {"content", "Joke?"}};
  json row = {{"chosen", {u1, a1, u2, {{"role", "assistant"}, {"content", "Knock knock"}}}},
              {"rejected", {u1, a1, u2, {{"role", "assistant"}, {"content", "No"}}}}};
  PreferenceExample ex = preference_from_json(row);
  EXPECT_EQ(ex.prompt, "<|user|>\nHi\n<|assistant|>\nHello\n<|user|>\nJoke?\n<|assistant|>\n");
  EXPECT_EQ(ex.chosen, "Knock knock");
  EXPECT_EQ(ex.rejected, "No");
}

TEST_F(DatasetFilesTest, RenderMessages) {
  json msgs = {{{"role", "user"}, {"content", "x"}}, {{"role", "assistant"}, {"content", "y"}}};
  EXPECT_EQ(render_messages(msgs, false), "<|user|>\nx\n<|assistant|>\ny\n");
  EXPECT_EQ(render_messages(json::array(), true), "<|assistant|>\n");
  EXPECT_THROW(render_messages(json::array({{{"role", "user"}}}), false), DataError);
}

// ---------------------------------------------------------------- SFT formats

TEST_F(DatasetFilesTest, SftPromptCompletionStringsAndMessages) {
  auto path = write("sft.jsonl",
                    R"({"prompt": "Q: 1+1", "completion": " 2"})"
                    "\n" +
                        json{{"prompt", {{{"role", "user"}, {"content", "hi"}}}},
                             {"completion", {{{"role", "assistant"}, {"content", "hello"}}}}}
                            .dump() +
                        "\n");
  auto r = load_sft_file(path, "error");
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.rows[0].prompt, "Q: 1+1");
  EXPECT_EQ(r.rows[0].completion, " 2");
  EXPECT_EQ(r.rows[1].prompt, "<|user|>\nhi\n<|assistant|>\n");
  EXPECT_EQ(r.rows[1].completion, "hello");
}

TEST_F(DatasetFilesTest, SftText) {
  auto path = write("text.jsonl", R"({"text": "The quick brown fox."})" "\n");
  auto r = load_sft_file(path, "error");
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].prompt, "");
  EXPECT_EQ(r.rows[0].completion, "The quick brown fox.");
}

TEST_F(DatasetFilesTest, SftMessages) {
  json row = {{"messages",
               {{{"role", "system"}, {"content", "S"}},
                {{"role", "user"}, {"content", "U"}},
                {{"role", "assistant"}, {"content", "A"}}}}};
  auto path = write("msgs.jsonl", row.dump() + "\n");
  auto r = load_sft_file(path, "error");
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].prompt, "<|system|>\nS\n<|user|>\nU\n<|assistant|>\n");
  EXPECT_EQ(r.rows[0].completion, "A");
}

TEST_F(DatasetFilesTest, SftBadRows) {
  auto reason = [](const json& row) {
    try {
      sft_from_json(row);
    } catch (const DataError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_CONTAINS(reason(json{{"prompt", "p"}}), "missing key \"completion\"");
  EXPECT_CONTAINS(reason(json{{"completion", "c"}}), "missing key \"prompt\"");
  EXPECT_CONTAINS(reason(json{{"prompt", "p"}, {"completion", ""}}), "empty completion");
  EXPECT_CONTAINS(reason(json{{"text", 3}}), "\"text\" must be a string");
  EXPECT_CONTAINS(reason(json{{"other", 1}}), "missing key");
  EXPECT_CONTAINS(reason(json{{"messages", {{{"role", "user"}, {"content", "u"}}}}}), "last message");
  EXPECT_CONTAINS(reason(json{{"prompt", {{{"role", "user"}, {"content", "u"}}}}, {"completion", "c"}}),
                  "key \"prompt\" is a list of messages but \"completion\" is a string: give both as strings");
}

// ---------------------------------------------------------------- bad lines

class BadLineTest : public DatasetFilesTest {
protected:
  // File: good row, blank line, the bad row, good row. The bad row is physical line 3.
  BadLine only_bad_line(const std::string& bad_row) {
    auto path = write("bad.jsonl", std::string(kGoodRow) + "\n\n" + bad_row + "\n" + kGoodRow + "\n");
    auto r = load_preference_file(path, "skip");
    EXPECT_EQ(r.rows.size(), 2u);
    if (r.bad_lines.size() != 1) {
      ADD_FAILURE() << "expected one bad line, got " << r.bad_lines.size();
      return {};
    }
    EXPECT_EQ(r.bad_lines[0].line, 3);
    return r.bad_lines[0];
  }
};

TEST_F(BadLineTest, InvalidJsonIncludesParserMessage) {
  BadLine b = only_bad_line(R"({"prompt": "p", "chosen": )");
  EXPECT_CONTAINS(b.reason, "invalid JSON: ");
  EXPECT_CONTAINS(b.reason, "syntax error");
  EXPECT_EQ(b.reason.find("json.exception"), std::string::npos) << b.reason;
}

TEST_F(BadLineTest, RowNotAnObject) {
  EXPECT_EQ(only_bad_line(R"(["p", "c", "r"])").reason, "row is not an object");
}

TEST_F(BadLineTest, MissingRejected) {
  EXPECT_EQ(only_bad_line(R"({"prompt": "p", "chosen": "c"})").reason, "missing key \"rejected\"");
}

TEST_F(BadLineTest, MissingChosen) {
  EXPECT_EQ(only_bad_line(R"({"prompt": "p", "rejected": "r"})").reason, "missing key \"chosen\"");
}

TEST_F(BadLineTest, StringPairSharingNoTextIsMissingPrompt) {
  EXPECT_CONTAINS(only_bad_line(R"({"chosen": "c", "rejected": "r"})").reason,
                  "missing key \"prompt\": chosen and rejected share no text to take as their prompt");
  EXPECT_CONTAINS(only_bad_line(R"({"chosen": "same", "rejected": [{"role": "assistant", "content": "x"}]})").reason,
                  "missing key \"prompt\" (rows without a prompt need chosen and rejected both as strings");
}

TEST_F(BadLineTest, ChosenWrongType) {
  EXPECT_EQ(only_bad_line(R"({"prompt": "p", "chosen": 5, "rejected": "r"})").reason,
            "key \"chosen\" must be a string or a list of messages");
}

TEST_F(BadLineTest, EmptyChosenResponse) {
  EXPECT_EQ(only_bad_line(R"({"prompt": "p", "chosen": "", "rejected": "r"})").reason,
            "empty chosen response");
}

TEST_F(BadLineTest, ConversationWithoutAssistantAnswerIsEmptyResponse) {
  EXPECT_EQ(only_bad_line(R"({"prompt": [{"role": "user", "content": "p"}], "chosen": [],)"
                          R"( "rejected": [{"role": "assistant", "content": "r"}]})")
                .reason,
            "empty chosen response");
}

TEST_F(BadLineTest, MessageWithoutRole) {
  EXPECT_EQ(only_bad_line(R"({"prompt": "p", "chosen": [{"content": "c"}], "rejected": "r"})").reason,
            "message 1 in \"chosen\" has no \"role\"");
}

TEST_F(BadLineTest, MessageWithoutContent) {
  EXPECT_EQ(
      only_bad_line(
          R"({"prompt": [{"role": "user", "content": "q"}, {"role": "user"}], "chosen": "c", "rejected": "r"})")
          .reason,
      "message 2 in \"prompt\" has no \"content\"");
}

// A row is standard or conversational as a whole (TRL refuses a mix): a prompt's messages with
// string responses would be rendered without the model's chat template.
TEST_F(BadLineTest, PromptMessagesWithStringResponses) {
  EXPECT_EQ(only_bad_line(R"({"prompt": [{"role": "user", "content": "q"}], "chosen": "c", "rejected": "r"})").reason,
            "key \"prompt\" is a list of messages but \"chosen\" is a string: give both as strings (standard), or "
            "both as lists of messages (conversational: a response as [{\"role\": \"assistant\", \"content\": \"...\"}])");
  EXPECT_CONTAINS(only_bad_line(R"({"prompt": "q", "chosen": [{"role": "assistant", "content": "c"}], "rejected": "r"})")
                      .reason,
                  "key \"prompt\" is a string but \"chosen\" is a list of messages");
}

TEST_F(BadLineTest, ChosenAndRejectedIdentical) {
  EXPECT_CONTAINS(only_bad_line(R"({"prompt": "p", "chosen": "same", "rejected": "same"})").reason, "identical");
}

TEST_F(DatasetFilesTest, SkipModeCountsEveryBadLine) {
  auto path = write("mixed.jsonl", std::string(kGoodRow) + "\n" + "not json\n" +
                                       R"({"prompt": "p"})" + "\n\n" + kGoodRow + "\n" + "42\n");
  auto r = load_preference_file(path, "skip");
  EXPECT_EQ(r.rows.size(), 2u);
  ASSERT_EQ(r.bad_lines.size(), 3u);
  EXPECT_EQ(r.bad_lines[0].line, 2);
  EXPECT_EQ(r.bad_lines[1].line, 3);
  EXPECT_EQ(r.bad_lines[2].line, 6);
}

TEST_F(DatasetFilesTest, ErrorModeNamesFileLineReasonAndFix) {
  auto path = write("err.jsonl", std::string(kGoodRow) + "\n\n" + R"({"prompt": "p", "chosen": "c"})" + "\n");
  std::string msg = error_of([&] { load_preference_file(path, "error"); });
  EXPECT_CONTAINS(msg, path + ":3: missing key \"rejected\"");
  EXPECT_CONTAINS(msg, "data.on_bad_line = \"skip\"");
}

TEST_F(DatasetFilesTest, UnknownOnBadLineIsAConfigError) {
  auto path = write("ok.jsonl", std::string(kGoodRow) + "\n");
  EXPECT_THROW(load_preference_file(path, "ignore"), ConfigError);
}

// ---------------------------------------------------------------- files

TEST_F(DatasetFilesTest, MissingFile) {
  std::string path = (dir_ / "nope.jsonl").string();
  std::string msg = error_of([&] { load_preference_file(path, "error"); });
  EXPECT_CONTAINS(msg, "cannot open dataset " + path);
  EXPECT_CONTAINS(msg, "No such file");
}

TEST_F(DatasetFilesTest, DirectoryIsNotADataset) {
  std::string msg = error_of([&] { load_sft_file(dir_.string(), "error"); });
  EXPECT_CONTAINS(msg, "cannot open dataset");
}

TEST_F(DatasetFilesTest, EmptyFileHasNoUsableRows) {
  auto path = write("empty.jsonl", "");
  EXPECT_CONTAINS(error_of([&] { load_preference_file(path, "error"); }), "no usable rows");
  auto blank = write("blank.jsonl", "\n  \n\r\n");
  EXPECT_CONTAINS(error_of([&] { load_sft_file(blank, "skip"); }), "no usable rows");
  auto empty_array = write("empty.json", "[]");
  EXPECT_CONTAINS(error_of([&] { load_preference_file(empty_array, "error"); }), "no usable rows");
}

TEST_F(DatasetFilesTest, AllBadLinesSkippedSaysHowMany) {
  auto path = write("allbad.jsonl", "1\n2\n");
  std::string msg = error_of([&] { load_preference_file(path, "skip"); });
  EXPECT_CONTAINS(msg, "no usable rows");
  EXPECT_CONTAINS(msg, "2 bad lines");
}

TEST_F(DatasetFilesTest, CrlfAndBomAreTolerated) {
  auto path = write("win.jsonl", "\xEF\xBB\xBF" + std::string(kGoodRow) + "\r\n\r\n" +
                                     R"({"prompt": "x", "chosen": "y", "rejected": "z"})" + "\r\n");
  auto r = load_preference_file(path, "error");
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.rows[0].prompt, "p");
  EXPECT_EQ(r.rows[1].rejected, "z");

  auto arr = write("win.json", "\xEF\xBB\xBF[\r\n" + std::string(kGoodRow) + "\r\n]\r\n");
  EXPECT_EQ(load_preference_file(arr, "error").rows.size(), 1u);
}

TEST_F(DatasetFilesTest, CrlfKeepsLineNumbers) {
  auto path = write("win.jsonl", std::string(kGoodRow) + "\r\n\r\nbroken\r\n");
  auto r = load_preference_file(path, "skip");
  ASSERT_EQ(r.bad_lines.size(), 1u);
  EXPECT_EQ(r.bad_lines[0].line, 3);
}

TEST_F(DatasetFilesTest, WritePreferenceJsonlRoundTrip) {
  std::vector<PreferenceExample> rows = {
      {"plain", "yes", "no"},
      {"quotes \" and \\ and\nnewlines\ttabs", "caf\xC3\xA9 \xE2\x9C\x93", "\xF0\x9F\x98\x80 emoji"},
      {"", "chosen", "rejected"}};
  std::string path = (dir_ / "out.jsonl").string();
  write_preference_jsonl(rows, path);

  std::ifstream in(path);
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    json parsed;
    EXPECT_NO_THROW(parsed = json::parse(line)) << line;
    ++lines;
  }
  EXPECT_EQ(lines, 3);

  auto r = load_preference_file(path, "error");
  ASSERT_EQ(r.rows.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(r.rows[i].prompt, rows[i].prompt);
    EXPECT_EQ(r.rows[i].chosen, rows[i].chosen);
    EXPECT_EQ(r.rows[i].rejected, rows[i].rejected);
  }
}

TEST_F(DatasetFilesTest, WriteReplacesInvalidUtf8) {
  std::string path = (dir_ / "bad_utf8.jsonl").string();
  write_preference_jsonl({{"p", "cut \xE2\x9C", "r"}}, path);
  auto r = load_preference_file(path, "error");
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].chosen.rfind("cut ", 0), 0u);
}

TEST_F(DatasetFilesTest, WriteToMissingFolderFails) {
  std::string path = (dir_ / "no_such_dir" / "out.jsonl").string();
  EXPECT_CONTAINS(error_of([&] { write_preference_jsonl({{"p", "c", "r"}}, path); }), "cannot write dataset");
}

// ---------------------------------------------------------------- shuffle_split

std::vector<int> iota_vector(int n) {
  std::vector<int> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

TEST(ShuffleSplitTest, SameSeedSameSplit) {
  std::vector<int> train1, eval1, train2, eval2;
  shuffle_split(iota_vector(100), 0.1, 42, train1, eval1);
  shuffle_split(iota_vector(100), 0.1, 42, train2, eval2);
  EXPECT_EQ(train1, train2);
  EXPECT_EQ(eval1, eval2);
}

TEST(ShuffleSplitTest, DifferentSeedDifferentOrder) {
  std::vector<int> train1, eval1, train2, eval2;
  shuffle_split(iota_vector(100), 0.1, 1, train1, eval1);
  shuffle_split(iota_vector(100), 0.1, 2, train2, eval2);
  EXPECT_NE(train1, train2);
}

TEST(ShuffleSplitTest, SizesAndNoLostRows) {
  std::vector<int> train, eval;
  shuffle_split(iota_vector(100), 0.1, 7, train, eval);
  EXPECT_EQ(train.size(), 90u);
  EXPECT_EQ(eval.size(), 10u);
  std::vector<int> all = train;
  all.insert(all.end(), eval.begin(), eval.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, iota_vector(100));
  EXPECT_NE(train, iota_vector(90));  // actually shuffled
}

TEST(ShuffleSplitTest, EvalAtLeastOneWhenFractionPositive) {
  std::vector<int> train, eval;
  shuffle_split(iota_vector(10), 0.001, 3, train, eval);
  EXPECT_EQ(eval.size(), 1u);
  EXPECT_EQ(train.size(), 9u);

  shuffle_split(iota_vector(2), 0.9, 3, train, eval);
  EXPECT_EQ(eval.size(), 1u);  // train keeps at least one row
  EXPECT_EQ(train.size(), 1u);
}

TEST(ShuffleSplitTest, ZeroFractionKeepsEverythingForTraining) {
  std::vector<int> train, eval;
  shuffle_split(iota_vector(10), 0.0, 3, train, eval);
  EXPECT_TRUE(eval.empty());
  EXPECT_EQ(train.size(), 10u);
}

}  // namespace
}  // namespace ganpo
