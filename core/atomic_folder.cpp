#include "core/atomic_folder.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/run_files.h"
#include "core/fault_points.h"

namespace fs = std::filesystem;

namespace ganpo {

namespace {

// Bytes of every regular file under root, by path relative to root ("/"-separated).
nlohmann::json file_sizes(const fs::path& root) {
  nlohmann::json files = nlohmann::json::object();
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    files[fs::relative(entry.path(), root).generic_string()] = static_cast<uint64_t>(entry.file_size());
  }
  return files;
}

uint64_t total_bytes(const nlohmann::json& files) {
  uint64_t total = 0;
  for (const auto& [name, size] : files.items()) total += size.get<uint64_t>();
  return total;
}

// fsync of every file and folder under root, root last.
void sync_tree(const fs::path& root) {
  for (const auto& entry : fs::recursive_directory_iterator(root)) sync_path(entry.path().string());
  sync_path(root.string());
}

std::string megabytes(uint64_t bytes) { return std::to_string((bytes + 999'999) / 1'000'000) + " MB"; }

}  // namespace

void sync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + " to flush it to disk: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // EINVAL: a file system that cannot sync folders; the data files were synced already.
  if (rc != 0 && err != EINVAL)
    throw Error("cannot flush " + path + " to disk: " + std::strerror(err) +
                "; check free disk space (df -h) and that the folder is still mounted");
}

void write_folder_atomically(const std::string& dir, const std::function<void(const std::string&)>& write) {
  const fs::path target(dir);
  const fs::path tmp = dir + ".tmp";
  const fs::path old = dir + ".old";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  try {
    write(tmp.string());
    fault_point("checkpoint.files_written");
    sync_tree(tmp);
    const nlohmann::json marker = {{"format", 1}, {"files", file_sizes(tmp)}};
    write_text_file((tmp / kCompleteMarker).string(), marker.dump(1) + "\n");
    sync_path((tmp / kCompleteMarker).string());
    sync_path(tmp.string());
  } catch (const std::exception& e) {
    // Free what was written (the disk may be full), keep dir as it was.
    uint64_t written = 0;
    if (fs::exists(tmp, ec)) {
      try {
        written = total_bytes(file_sizes(tmp));
      } catch (const std::exception&) {
      }
    }
    fs::remove_all(tmp, ec);
    const auto space = fs::space(target.parent_path().empty() ? fs::path(".") : target.parent_path(), ec);
    const std::string what = e.what();
    // Disk advice only when space is what failed: the system's words for it, or a nearly full disk.
    bool no_space = !ec && space.available < written + 64'000'000ULL;
    for (int code : {ENOSPC, EFBIG, EDQUOT}) no_space = no_space || what.find(std::strerror(code)) != std::string::npos;
    std::string msg = "cannot write " + dir + ": " + what;
    if (no_space && !ec)
      msg += " (" + megabytes(written) + " written before the failure, " + megabytes(space.available) +
             " free on its disk; free space there, then resume the run: it continues from its last complete checkpoint)";
    throw Error(msg);
  }
  fault_point("checkpoint.marker_written");
  const fs::path parent = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  fs::remove_all(old, ec);
  if (fs::exists(target)) {
    // Replacing a folder: swap the two in one step where the file system can (Linux renameat2),
    // so no crash leaves the name without a complete folder; the old one is then NAME.tmp.
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
      sync_path(parent.string());
      fs::remove_all(tmp, ec);
      return;
    }
    fs::rename(target, old);  // elsewhere: two renames, through NAME.old
  }
  fs::rename(tmp, target);
  sync_path(parent.string());
  fs::remove_all(old, ec);
}

void require_complete_checkpoint(const std::string& dir, const std::string& advice) {
  if (const std::string why = incomplete_reason(dir); !why.empty())
    throw ModelFileError(dir + " is not a complete checkpoint: " + why + "; " + advice);
}

std::string incomplete_reason(const std::string& dir) {
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return "the folder does not exist";
  std::ifstream in(root / kCompleteMarker, std::ios::binary);
  if (!in) {
    const std::string name = root.filename().string();
    const bool temporary = name.size() > 4 && (name.rfind(".tmp") == name.size() - 4 || name.rfind(".old") == name.size() - 4);
    std::ifstream meta(root / "meta.json", std::ios::binary);
    const auto j = meta ? nlohmann::json::parse(meta, nullptr, false) : nlohmann::json();
    if (!temporary && j.is_object() && !j.contains("format")) return "";  // written before markers existed
    return std::string("it has no ") + kCompleteMarker + " (it was still being written when its run stopped)";
  }
  const auto marker = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!marker.is_object() || !marker.contains("files") || !marker["files"].is_object())
    return std::string("its ") + kCompleteMarker + " is damaged";
  for (const auto& [name, size] : marker["files"].items()) {
    if (!size.is_number_unsigned()) return std::string("its ") + kCompleteMarker + " is damaged";
    const fs::path file = root / name;
    if (fs::path(name).is_absolute() || name.find("..") != std::string::npos)
      return std::string("its ") + kCompleteMarker + " names a file outside the folder";
    const auto actual = fs::file_size(file, ec);
    if (ec) return name + " is missing";
    if (actual != size.get<uint64_t>())
      return name + " has " + std::to_string(actual) + " bytes instead of " + std::to_string(size.get<uint64_t>());
  }
  return "";
}

std::string complete_checkpoint_at_or_before(const std::string& dir) {
  if (dir.empty() || incomplete_reason(dir).empty()) return dir;
  const fs::path path(dir);
  const auto step_of = [](const std::string& name) -> long long {
    if (name.rfind("checkpoint-", 0) != 0) return -1;
    const std::string digits = name.substr(11);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
    return std::stoll(digits);
  };
  const long long step = step_of(path.filename().string());
  std::string best;
  long long best_step = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(path.parent_path(), ec)) {
    const long long s = step_of(entry.path().filename().string());
    if (s >= 0 && (step < 0 || s < step) && s > best_step && incomplete_reason(entry.path().string()).empty())
      best = entry.path().string(), best_step = s;
  }
  return best;
}

bool is_written_checkpoint(const std::string& dir) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(dir) / "meta.json", ec);
}

}  // namespace ganpo
