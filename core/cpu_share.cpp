#include "core/cpu_share.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace fs = std::filesystem;

namespace ganpo {
namespace {

constexpr const char* kSuffix = ".lock";

// True when another process holds the lock on `path`; a file nobody holds is removed.
bool held_by_someone(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // removed meanwhile
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0;
  if (!held) {
    std::error_code ec;
    fs::remove(path, ec);
  }
  ::close(fd);
  return held;
}

}  // namespace

std::string default_cpu_share_dir() {
  if (const char* d = std::getenv("GANPO_CPU_SHARE_DIR"); d != nullptr && *d != '\0') return d;
  if (const char* r = std::getenv("XDG_RUNTIME_DIR"); r != nullptr && *r != '\0')
    return (fs::path(r) / "ganpo-workbench" / "cpu-share").string();
  return (fs::path("/tmp") / ("ganpo-workbench-" + std::to_string(::getuid())) / "cpu-share").string();
}

CpuShare::CpuShare(std::string dir) : dir_(dir.empty() ? default_cpu_share_dir() : std::move(dir)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::replace, ec);
  static std::atomic<int> counter{0};
  const std::string base = std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
  // Lock a file under a temporary name, then rename it into view, so a concurrent count never
  // sees (and removes) a file whose lock is not taken yet.
  const fs::path tmp = fs::path(dir_) / (base + ".joining");
  const int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  const fs::path final_path = fs::path(dir_) / (base + kSuffix);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0 || ::rename(tmp.c_str(), final_path.c_str()) != 0) {
    ::close(fd);
    fs::remove(tmp, ec);
    return;
  }
  fd_ = fd;
  path_ = final_path.string();
}

CpuShare::~CpuShare() {
  if (fd_ < 0) return;
  std::error_code ec;
  fs::remove(path_, ec);
  ::close(fd_);
}

int CpuShare::participants() const {
  if (fd_ < 0) return 1;
  int live = 1;
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (p.extension() != kSuffix || p.string() == path_) continue;
    if (held_by_someone(p)) ++live;
  }
  return live;
}

}  // namespace ganpo
