// Errors a person can act on.
//
// Expected failures (a bad config value, a missing file, a malformed dataset line, a corrupt
// checkpoint) throw ganpo::Error or one of its subclasses with a message that says what
// happened and what to do. Broken invariants use GANPO_ASSERT, which names file:line.
// LibTorch's own exceptions are caught at the worker boundary (app/) and become a status.
#pragma once

#include <stdexcept>
#include <string>

namespace ganpo {

class Error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

// A run configuration that cannot be used; the message names key, value and what is allowed.
class ConfigError : public Error {
public:
  using Error::Error;
};

// A dataset file or line that cannot be read.
class DataError : public Error {
public:
  using Error::Error;
};

// A model or checkpoint folder that is missing, incomplete or corrupt.
class ModelFileError : public Error {
public:
  using Error::Error;
};

[[noreturn]] void assertion_failed(const char* expr, const char* file, int line, const std::string& msg);

}  // namespace ganpo

#define GANPO_ASSERT(cond, msg)                                                   \
  do {                                                                            \
    if (!(cond)) ::ganpo::assertion_failed(#cond, __FILE__, __LINE__, (msg));     \
  } while (0)
