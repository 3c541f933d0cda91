// Python's re patterns run with PCRE2 (core/text/regex.h), as PEFT's adapter_config.json holds
// them: re.match anchors at the start, re.fullmatch at both ends, groups as Python numbers them,
// $ at the end of the text, and a pattern that backtracks without end fails fast with the reason.
// (Oniguruma's, the tokenizers', are tested in hf_tokenizer_test.cpp.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "core/text/regex.h"

namespace ganpo::text {
namespace {

TEST(PythonRegex, MatchAndFullMatchAnchorAsPythonDoes) {
  const Regex qv(R"(.*\.(q|v)_proj)", RegexSyntax::python);
  EXPECT_TRUE(qv.full_match("model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(qv.full_match("model.layers.0.self_attn.q_proj.lora_A"));  // re.fullmatch: the whole name
  EXPECT_TRUE(qv.match("model.layers.0.self_attn.q_proj.lora_A"));       // re.match: from the start only
  EXPECT_FALSE(Regex("q_proj", RegexSyntax::python).match("model.layers.0.self_attn.q_proj"));

  // PEFT's layer index: the first number after a module list (lazy .*?), group 1.
  const Regex layer(R"(.*?\.[^.]*\.(\d+)\.)", RegexSyntax::python);
  std::vector<std::string> groups;
  ASSERT_TRUE(layer.match("model.layers.12.mlp.experts.3.down_proj", &groups));
  EXPECT_EQ(groups, (std::vector<std::string>{"12"}));
  // Groups that take no part are empty, as Python's None.
  ASSERT_TRUE(Regex(R"((a)|(b))", RegexSyntax::python).match("b", &groups));
  EXPECT_EQ(groups, (std::vector<std::string>{"", "b"}));
  // $ is the end of the text (no line anchors without re.MULTILINE).
  EXPECT_FALSE(Regex("a$", RegexSyntax::python).match("a\nb"));
  EXPECT_TRUE(Regex("(.*\\.)?(down_proj)$", RegexSyntax::python).match("model.layers.1.mlp.down_proj"));
  // Python's named groups.
  EXPECT_TRUE(Regex(R"((?P<block>layers)\.\d+\.(?P=block)?)", RegexSyntax::python).match("layers.3."));
}

TEST(PythonRegex, BadPatternsAreRefusedWithTheReason) {
  try {
    Regex("(q_proj", RegexSyntax::python);
    ADD_FAILURE() << "an unclosed group compiled";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not compile"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("PCRE2 form"), std::string::npos) << "written as given: " << e.what();
  }
  // (a+)+$ on "aaa...ab" backtracks 2^n ways; PCRE2's limits end it.
  const Regex evil("(a+)+$", RegexSyntax::python);
  try {
    evil.full_match(std::string(40, 'a') + "b");
    ADD_FAILURE() << "no error for a catastrophically backtracking pattern";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("backtracks catastrophically"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ganpo::text
