// A fresh, private folder for one test: made with mkdtemp under the system temp folder and named
// after the running test, so parallel ctest processes, repeated runs and other checkouts never
// share it; removed with everything in it when the object goes.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace ganpo::test {

class TestTempDir {
public:
  TestTempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : std::string("test");
    std::replace(name.begin(), name.end(), '/', '_');  // parameterised tests: "Suite/Name/0"
    std::string pattern = (std::filesystem::temp_directory_path() / ("ganpo-" + name + "-XXXXXX")).string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  ~TestTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TestTempDir(const TestTempDir&) = delete;
  TestTempDir& operator=(const TestTempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path path_;
};

}  // namespace ganpo::test
