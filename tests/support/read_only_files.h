// A folder that turns read-only under a process that has its files open, as after a read-only
// remount: while a ReadOnlyFiles lives, the given files and folders carry the immutable flag
// (FS_IOC_SETFLAGS, as `chattr +i`), so even writes through file descriptors opened before fail
// (EPERM) and nothing can be created in the folders. chmod cannot do this (it leaves open
// descriptors writable, and root ignores it); the flag needs root (CAP_LINUX_IMMUTABLE) and a
// file system that has it (ext4, xfs, btrfs; not tmpfs). ok() says whether it took: tests skip
// otherwise. The flags are cleared when it goes (before the test's temporary folder is removed).
#pragma once

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

namespace ganpo::test {

class ReadOnlyFiles {
public:
  explicit ReadOnlyFiles(const std::vector<std::string>& paths) {
    for (const std::string& p : paths) {
      if (!std::filesystem::exists(p)) continue;
      if (!set_immutable(p, true)) {
        ok_ = false;
        break;
      }
      done_.push_back(p);
    }
  }
  ~ReadOnlyFiles() {
    for (auto it = done_.rbegin(); it != done_.rend(); ++it) set_immutable(*it, false);
  }
  ReadOnlyFiles(const ReadOnlyFiles&) = delete;
  ReadOnlyFiles& operator=(const ReadOnlyFiles&) = delete;

  bool ok() const { return ok_ && !done_.empty(); }

private:
  static bool set_immutable(const std::string& path, bool on) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return false;
    int flags = 0;
    bool done = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
    if (done) {
      flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
      done = ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
    }
    ::close(fd);
    return done;
  }

  std::vector<std::string> done_;
  bool ok_ = true;
};

}  // namespace ganpo::test
