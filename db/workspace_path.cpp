#include "db/workspace_path.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

namespace ganpo {

std::string default_workspace_path() {
  namespace fs = std::filesystem;
  fs::path base;
  // XDG says a relative XDG_DATA_HOME is invalid and must be ignored.
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg == '/') {
    base = xdg;
  } else {
    const char* home = std::getenv("HOME");
    if (!home || !*home) {
      const passwd* pw = ::getpwuid(::getuid());
      home = pw ? pw->pw_dir : "/tmp";
    }
    base = fs::path(home) / ".local" / "share";
  }
  return (base / "ganpo-workbench" / "workspace.sqlite").string();
}

}  // namespace ganpo
