// EXPECT_CONTAINS(text, part): a test expectation that `text` holds `part`, printing both when it
// does not. The test targets link gtest without gmock, so this stands in for HasSubstr.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace ganpo::test {

inline ::testing::AssertionResult Contains(const char* text_expr, const char* part_expr, const std::string& text,
                                           const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << text_expr << " does not contain " << part_expr << "\n  text: " << text
                                       << "\n  part: " << part;
}

}  // namespace ganpo::test

#define EXPECT_CONTAINS(text, part) EXPECT_PRED_FORMAT2(::ganpo::test::Contains, text, part)
