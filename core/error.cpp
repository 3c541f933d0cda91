#include "core/error.h"

#include <sstream>

namespace ganpo {

void assertion_failed(const char* expr, const char* file, int line, const std::string& msg) {
  std::ostringstream os;
  os << "internal error at " << file << ":" << line << ": " << expr << " failed";
  if (!msg.empty()) os << " (" << msg << ")";
  throw std::logic_error(os.str());
}

}  // namespace ganpo
