// Folders written whole or not at all: the completion marker, what makes a folder incomplete,
// and a write that fails half-way (as on a full disk) leaving the previous folder untouched.
#include "core/atomic_folder.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tests/core/temp_dir_support.h"

namespace fs = std::filesystem;

namespace ganpo {
namespace {

void write_file(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(AtomicFolder, WritesTheMarkerLastWithEveryFileSize) {
  test::TestTempDir tmp;
  const fs::path dir = tmp.path() / "checkpoint-10";
  write_folder_atomically(dir.string(), [](const std::string& d) {
    write_file(fs::path(d) / "model.safetensors", std::string(1000, 'w'));
    write_file(fs::path(d) / "trainer_state" / "state.json", "{\"step\": 10}");
  });
  EXPECT_FALSE(fs::exists(dir.string() + ".tmp"));
  EXPECT_EQ(incomplete_reason(dir.string()), "");
  const auto marker = nlohmann::json::parse(read_file(dir / kCompleteMarker));
  EXPECT_EQ(marker["files"]["model.safetensors"], 1000);
  EXPECT_EQ(marker["files"]["trainer_state/state.json"], 12);
  EXPECT_FALSE(marker["files"].contains(kCompleteMarker));
}

TEST(AtomicFolder, SaysWhyAFolderIsIncomplete) {
  test::TestTempDir tmp;
  const fs::path dir = tmp.path() / "checkpoint-5";
  EXPECT_EQ(incomplete_reason(dir.string()), "the folder does not exist");
  write_folder_atomically(dir.string(), [](const std::string& d) {
    write_file(fs::path(d) / "a.bin", "12345678");
    write_file(fs::path(d) / "b.bin", "xy");
  });
  fs::resize_file(dir / "a.bin", 3);
  EXPECT_EQ(incomplete_reason(dir.string()), "a.bin has 3 bytes instead of 8");
  fs::remove(dir / "a.bin");
  EXPECT_EQ(incomplete_reason(dir.string()), "a.bin is missing");
  write_file(dir / kCompleteMarker, "{\"files\": {\"../../etc/passwd\": 1}}");
  EXPECT_EQ(incomplete_reason(dir.string()), "its complete.json names a file outside the folder");
  write_file(dir / kCompleteMarker, "{\"files\": [1, 2");
  EXPECT_EQ(incomplete_reason(dir.string()), "its complete.json is damaged");
  fs::remove(dir / kCompleteMarker);
  EXPECT_NE(incomplete_reason(dir.string()).find("it has no complete.json"), std::string::npos);
  EXPECT_FALSE(is_written_checkpoint(dir.string()));
  write_file(dir / "meta.json", "{\"format\": 2}");
  EXPECT_TRUE(is_written_checkpoint(dir.string()));
  EXPECT_NE(incomplete_reason(dir.string()).find("it has no complete.json"), std::string::npos);
  // A checkpoint from before markers existed (no "format") still counts, unless it is a .tmp.
  write_file(dir / "meta.json", "{\"step\": 5}");
  EXPECT_EQ(incomplete_reason(dir.string()), "");
  fs::rename(dir, dir.string() + ".tmp");
  EXPECT_NE(incomplete_reason(dir.string() + ".tmp"), "");
}

TEST(AtomicFolder, AFailedWriteLeavesThePreviousFolderAndNoTemporaryOne) {
  test::TestTempDir tmp;
  const fs::path dir = tmp.path() / "final";
  write_folder_atomically(dir.string(), [](const std::string& d) { write_file(fs::path(d) / "w.bin", "old"); });
  try {
    write_folder_atomically(dir.string(), [](const std::string& d) {
      write_file(fs::path(d) / "w.bin", std::string(5000, 'n'));
      throw Error(std::strerror(ENOSPC));
    });
    ADD_FAILURE() << "the failure was swallowed";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cannot write " + dir.string() + ": " + std::strerror(ENOSPC)), std::string::npos) << msg;
    EXPECT_NE(msg.find("1 MB written before the failure"), std::string::npos) << msg;  // rounded up
    EXPECT_NE(msg.find("free space there, then resume the run"), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(dir.string() + ".tmp")) << "the partial folder is removed, freeing its space";
  // A failure that is not about space gets no disk advice.
  try {
    write_folder_atomically(dir.string(), [](const std::string&) { throw Error("unsupported dtype F8"); });
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot write " + dir.string() + ": unsupported dtype F8");
  }
  EXPECT_EQ(read_file(dir / "w.bin"), "old");
  EXPECT_EQ(incomplete_reason(dir.string()), "");

  // Replacing a complete folder (swapped in one step): the new one, nothing left beside it.
  write_folder_atomically(dir.string(), [](const std::string& d) { write_file(fs::path(d) / "w.bin", "new"); });
  EXPECT_EQ(read_file(dir / "w.bin"), "new");
  EXPECT_EQ(incomplete_reason(dir.string()), "");
  EXPECT_FALSE(fs::exists(dir.string() + ".old"));
  EXPECT_FALSE(fs::exists(dir.string() + ".tmp"));
}

// A new start of a data-parallel run goes on from the checkpoint a rank named, or, where rank 0
// was still writing it when the ranks ended, from the newest complete one before it.
TEST(AtomicFolder, TheCompleteCheckpointAtOrBeforeAStep) {
  test::TestTempDir tmp;
  const auto write = [&](const std::string& name) {
    write_folder_atomically((tmp.path() / name).string(), [](const std::string& d) {
      write_file(fs::path(d) / "meta.json", "{\"format\": 2}");
    });
  };
  write("checkpoint-2");
  write("checkpoint-4");
  write("checkpoint-10");
  write_file(tmp.path() / "checkpoint-6.tmp" / "meta.json", "{\"format\": 2}");  // being written
  write_file(tmp.path() / "checkpoint-8" / "meta.json", "{\"format\": 2}");      // its marker missing
  const auto at = [&](const std::string& name) { return (tmp.path() / name).string(); };
  EXPECT_EQ(complete_checkpoint_at_or_before(at("checkpoint-4")), at("checkpoint-4"));
  EXPECT_EQ(complete_checkpoint_at_or_before(at("checkpoint-6")), at("checkpoint-4"));
  EXPECT_EQ(complete_checkpoint_at_or_before(at("checkpoint-8")), at("checkpoint-4"));
  EXPECT_EQ(complete_checkpoint_at_or_before(at("checkpoint-1")), "");
  EXPECT_EQ(complete_checkpoint_at_or_before(""), "");
}

}  // namespace
}  // namespace ganpo
