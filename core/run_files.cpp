#include "core/run_files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <tuple>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace fs = std::filesystem;

namespace ganpo {
namespace {

std::ofstream open_file(const fs::path& path, bool append) {
  std::ofstream f(path, append ? std::ios::app : std::ios::trunc);
  if (!f) throw Error("cannot write " + path.string() + "; check output_dir and its permissions");
  return f;
}

}  // namespace

nlohmann::json json_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return v;
}

std::string json_text(const nlohmann::json& value, int indent) {
  return value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string json_text(const nlohmann::ordered_json& value, int indent) {
  return value.dump(indent, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string metrics_line(int64_t step, const std::map<std::string, double>& metrics) {
  nlohmann::json j;
  j["step"] = step;
  for (const auto& [k, v] : metrics) j[k] = json_number(v);
  return j.dump();
}

namespace {

// output_dir/train.lock, held (flock) until the returned descriptor closes; throws Error naming the
// process that holds it; -1 (no guard) where the file system has no flock.
int lock_output_dir(const fs::path& dir) {
  const std::string path = (dir / "train.lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot write " + path + ": " + std::strerror(errno) + "; check output_dir and its permissions");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {};
    const ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    // A file system without flock (some network and FUSE mounts): train without the guard.
    if (err != EWOULDBLOCK) return -1;
    const std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : std::string("?");
    throw Error("another process (pid " + holder.substr(0, holder.find('\n')) + ") is training into " + dir.string() +
                "; wait for it to end or stop it, or give this run another output_dir (--set output_dir=DIR)");
  }
  const std::string mine = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, mine.data(), mine.size(), 0) < 0) {
    // (the pid is only for the message a second process gives; the lock holds without it)
  }
  return fd;
}

}  // namespace

RunFilesWriter::RunFilesWriter(const RunConfig& config, bool append) : dir_(config.output_dir) {
  const fs::path dir = config.output_dir;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create output_dir " + dir.string() + ": " + ec.message());
  lock_fd_ = lock_output_dir(dir);
  try {
    save_config_file(config, (dir / "config.toml").string());
    metrics_ = open_file(dir / "metrics.jsonl", append);
    eval_ = open_file(dir / "eval.jsonl", append);
    samples_ = open_file(dir / "samples.jsonl", append);
    events_ = open_file(dir / "events.log", append);
  } catch (...) {
    if (lock_fd_ >= 0) ::close(lock_fd_);  // (no destructor runs for a constructor that throws)
    throw;
  }
}

RunFilesWriter::~RunFilesWriter() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

void RunFilesWriter::on_start(int64_t, int64_t first_step, const std::map<std::string, std::string>&) {
  for (auto [file, name] : {std::pair{&metrics_, "metrics.jsonl"}, {&eval_, "eval.jsonl"}, {&samples_, "samples.jsonl"}})
    keep_rows(  // (from the start: none, step 0's samples too)
        *file, name, [&](int64_t step) { return first_step > 0 && step <= first_step; },
        "the rows after step " + std::to_string(first_step > 0 ? first_step : -1));
}

void RunFilesWriter::on_redo(int64_t step, bool evaluation, bool samples) {
  for (auto [file, name, redone] : {std::tuple{&eval_, "eval.jsonl", evaluation}, {&samples_, "samples.jsonl", samples}})
    if (redone) keep_rows(*file, name, [&](int64_t s) { return s != step; }, "the rows of step " + std::to_string(step));
}

void RunFilesWriter::keep_rows(std::ofstream& file, const std::string& name, const std::function<bool(int64_t)>& keep_step,
                               const std::string& dropped_rows) {
  const fs::path path = fs::path(dir_) / name, tmp = fs::path(dir_) / (name + ".tmp");
  file.close();
  std::string kept, line;
  bool dropped = false;
  {
    std::ifstream in(path, std::ios::binary);
    while (std::getline(in, line)) {
      const auto row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      const bool keep = row.is_object() && row.contains("step") && row["step"].is_number_integer() &&
                        keep_step(row["step"].get<int64_t>());
      if (keep) kept += line + "\n";
      dropped = dropped || !keep;
    }
  }
  std::string failure;
  if (dropped) try {
      write_text_file(tmp.string(), kept);
      fs::rename(tmp, path);
    } catch (const std::exception& e) {  // (a full disk) the rows stay, and the new ones follow them
      failure = e.what();
    }
  file = open_file(path, true);
  if (!failure.empty())
    events_ << "warning: could not drop " << dropped_rows << " from " << name
            << ", which this stage writes again: " << failure << std::endl;
}

void RunFilesWriter::on_log(const std::string& level, const std::string& text) {
  events_ << level << ": " << text << std::endl;
}

void RunFilesWriter::on_metrics(int64_t step, const std::map<std::string, double>& metrics) {
  metrics_ << metrics_line(step, metrics) << std::endl;
}

void RunFilesWriter::on_eval(int64_t step, const EvalReport& report) {
  nlohmann::json line = to_json(report);
  line["step"] = step;
  eval_ << json_text(line) << std::endl;
}

void RunFilesWriter::on_samples(int64_t step, const std::vector<SampleRecord>& samples) {
  for (const auto& s : samples) {
    nlohmann::json j = {{"step", step}, {"prompt_index", s.prompt_index}, {"prompt", s.prompt},
                        {"policy", s.policy}, {"reference", s.reference}};
    if (std::isfinite(s.policy_score)) j["policy_score"] = s.policy_score;
    if (std::isfinite(s.reference_score)) j["reference_score"] = s.reference_score;
    samples_ << json_text(j) << "\n";
  }
  samples_.flush();
}

std::string safe_file_name(std::string_view text, std::string_view keep) {
  std::string out(text);
  for (char& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c)) && keep.find(c) == std::string_view::npos) c = '_';
  return out;
}

void write_text_file(const std::string& path, const std::string& text) {
  errno = 0;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();  // the last bytes reach the file here: check after it, not before
  if (out.fail())
    throw Error("cannot write " + path + ": " + (errno ? std::strerror(errno) : "write failed") +
                "; check free disk space and permissions");
}

}  // namespace ganpo
