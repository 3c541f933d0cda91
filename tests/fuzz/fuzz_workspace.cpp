// Opening an arbitrary file as a workspace and exporting from it (`ganpo runs export`): the input
// is either a whole file (anything starting with the SQLite header is written out as the
// workspace file) or an SQL script run on an empty file first, which builds damaged workspaces
// far more often than flipped bytes do (odd schemas, NULLs and text in number columns, huge
// versions, triggers). RunStore::open either refuses the file with ganpo::Error or opens it;
// every run it lists then exports as CSV and JSON Lines without crashing.
#include <sqlite3.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <ostream>
#include <string>

#include "core/error.h"
#include "db/run_export.h"
#include "db/run_store.h"

namespace {

// On tmpfs where there is one: the store syncs on commit, and on a disk that caps the fuzzer at
// about 10 inputs a second.
const std::string& workspace_path() {
  static const std::string path = std::string(::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") +
                                  "/ganpo-fuzz-workspace-" + std::to_string(::getpid()) + ".sqlite";
  return path;
}

void remove_workspace() {
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) std::remove((workspace_path() + suffix).c_str());
}

// Aborts a setup script that runs too long (a recursive CTE without end).
int stop_after_budget(void* steps) { return ++*static_cast<int*>(steps) > 2000; }

// Runs the script on a fresh file with no way to reach other files: ATTACH (and VACUUM INTO,
// which attaches) is disabled, so the fuzzer cannot write outside the workspace.
void build_workspace(const std::string& script) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(workspace_path().c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) == SQLITE_OK) {
    sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 1 << 20);
    int steps = 0;
    sqlite3_progress_handler(db, 1000, stop_after_budget, &steps);
    sqlite3_exec(db, script.c_str(), nullptr, nullptr, nullptr);
  }
  sqlite3_close(db);
}

struct NullBuffer : std::streambuf {
  int overflow(int c) override { return c; }
  std::streamsize xsputn(const char*, std::streamsize n) override { return n; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ganpo;
  remove_workspace();
  const std::string input(reinterpret_cast<const char*>(data), size);
  if (input.compare(0, 16, std::string("SQLite format 3\0", 16)) == 0) {
    std::ofstream(workspace_path(), std::ios::binary) << input;
  } else {
    build_workspace(input);
  }
  NullBuffer sink;
  std::ostream out(&sink);
  try {
    RunStore store = RunStore::open(workspace_path());
    int exported = 0;
    for (const RunRow& run : store.runs()) {
      if (++exported > 8) break;
      for (ExportTable table : {ExportTable::Metrics, ExportTable::Samples, ExportTable::Evals, ExportTable::Events})
        for (ExportFormat format : {ExportFormat::Csv, ExportFormat::Jsonl}) {
          try {
            export_run(store, run.id, table, format, out);
          } catch (const Error&) {
          }
        }
    }
  } catch (const Error&) {
  }
  remove_workspace();
  return 0;
}
