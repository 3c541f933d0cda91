// Small RAII wrappers over the sqlite3 C API: a connection (Database), a prepared statement
// (Statement) and a transaction (Transaction). Every failure becomes a SqliteError (a
// ganpo::Error) carrying SQLite's message and extended result code, never a crash. One Database is one connection;
// it must not be used from two threads at once (each thread opens its own).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/error.h"

struct sqlite3;
struct sqlite3_stmt;

namespace ganpo::sql {

// A failed SQLite call: the message plus SQLite's extended result code.
class SqliteError : public Error {
public:
  SqliteError(const std::string& message, int code) : Error(message), code_(code) {}
  int code() const { return code_; }
  // Another connection holds a lock (SQLITE_BUSY / SQLITE_LOCKED): trying again later works.
  bool is_busy() const;
  // The file cannot take writes any more: disk full, I/O error, read-only, gone, or damaged.
  bool is_storage_failure() const;
  // Of those, the file's content is damaged (SQLITE_CORRUPT / SQLITE_NOTADB): freeing space or
  // fixing permissions does not help; a check and a backup do.
  bool is_corrupt() const;

private:
  int code_;
};

class Database {
public:
  Database() = default;
  // Opens (flags: SQLITE_OPEN_* bits). Throws ganpo::Error when SQLite cannot open the file.
  Database(const std::string& path, int flags);
  ~Database();
  Database(Database&& other) noexcept;
  Database& operator=(Database&& other) noexcept;
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  sqlite3* get() const { return db_; }
  const std::string& path() const { return path_; }
  // Runs one or more statements that return no rows we need.
  void exec(const std::string& sql);
  // Runs a statement and returns the first column of its first row as text ("" when none).
  std::string query_text(const std::string& sql);
  int64_t query_int(const std::string& sql);
  int64_t last_insert_id() const;
  int changes() const;
  // Throws ganpo::Error("<what>: <sqlite message> (code N)") if rc is not OK/ROW/DONE.
  void check(int rc, const std::string& what) const;

private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

class Statement {
public:
  Statement(Database& db, const std::string& sql);
  ~Statement();
  Statement(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement& operator=(Statement&&) = delete;

  // Parameters are 1-based, as in SQLite.
  Statement& bind(int i, int64_t v);
  Statement& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  Statement& bind(int i, double v);
  Statement& bind(int i, const std::string& v);
  Statement& bind(int i, const char* v) { return bind(i, std::string(v)); }
  Statement& bind_null(int i);
  Statement& bind(int i, const std::optional<double>& v) { return v ? bind(i, *v) : bind_null(i); }
  Statement& bind(int i, const std::optional<int64_t>& v) { return v ? bind(i, *v) : bind_null(i); }

  // true: a row is ready; false: done.
  bool step();
  // Executes to completion (for INSERT/UPDATE/DELETE).
  void run();
  // Resets for reuse and clears bindings.
  void reset();

  int column_count() const;
  bool is_null(int col) const;
  int64_t col_int(int col) const;
  double col_double(int col) const;
  std::string col_text(int col) const;
  std::optional<double> col_opt_double(int col) const;
  std::optional<int64_t> col_opt_int(int col) const;

private:
  Database* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string sql_;
};

// BEGIN IMMEDIATE (takes the write lock up front, so busy_timeout applies instead of a
// deadlock-on-upgrade); rolls back in the destructor unless commit() was called.
class Transaction {
public:
  explicit Transaction(Database& db, bool immediate = true);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

private:
  Database& db_;
  bool done_ = false;
};

}  // namespace ganpo::sql
