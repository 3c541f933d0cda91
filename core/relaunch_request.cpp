#include "core/relaunch_request.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/run_files.h"

namespace fs = std::filesystem;

namespace ganpo {

namespace {

constexpr const char* kStandingPrefix = "standing-";

fs::path request_file(const std::string& dir, int rank, bool standing) {
  return fs::path(dir) / ((standing ? kStandingPrefix : "") + std::string("rank") + std::to_string(rank) + ".json");
}

void write_request_file(const fs::path& file, const RelaunchRequest& request) {
  const nlohmann::json j = {{"rank", request.rank},
                            {"batches", request.batches},
                            {"resume_from", request.resume_from},
                            {"change", request.change},
                            {"reason", request.reason}};
  const fs::path tmp = fs::path(file.string() + ".tmp");
  write_text_file(tmp.string(), json_text(j));
  fs::rename(tmp, file);
}

std::optional<RelaunchRequest> read_request_file(const fs::path& file) {
  std::ifstream in(file);
  const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("batches") || !j["batches"].is_array() || j["batches"].size() != 3) return std::nullopt;
  RelaunchRequest r;
  try {
    r.rank = j.at("rank").get<int>();
    r.batches = j.at("batches").get<std::vector<int64_t>>();
    r.resume_from = j.value("resume_from", std::string());
    r.change = j.value("change", std::string());
    r.reason = j.value("reason", std::string());
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
  return r;
}

// The lowest rank's request among the files named `prefix`rank<R>.json, but `except`'s.
std::optional<RelaunchRequest> lowest_request(const std::string& dir, const std::string& prefix, int except = -1) {
  std::optional<RelaunchRequest> lowest;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix + "rank", 0) != 0 || entry.path().extension() != ".json") continue;
    auto r = read_request_file(entry.path());
    if (r && r->rank != except && (!lowest || r->rank < lowest->rank)) lowest = std::move(r);
  }
  return lowest;
}

}  // namespace

void write_relaunch_request(const std::string& dir, const RelaunchRequest& request) {
  write_request_file(request_file(dir, request.rank, false), request);
}

std::optional<RelaunchRequest> read_relaunch_request(const std::string& dir) { return lowest_request(dir, ""); }

void write_standing_request(const std::string& dir, const RelaunchRequest& request) {
  write_request_file(request_file(dir, request.rank, true), request);
}

void remove_standing_request(const std::string& dir, int rank) {
  std::error_code ec;
  fs::remove(request_file(dir, rank, true), ec);
}

bool take_standing_request(const std::string& dir, int rank) {
  // (Written beside it, not renamed: a peer reading the folder meanwhile finds one or both.)
  const auto standing = read_request_file(request_file(dir, rank, true));
  if (!standing) return false;
  try {
    write_request_file(request_file(dir, rank, false), *standing);
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

std::optional<RelaunchRequest> standing_request_of_another(const std::string& dir, int rank) {
  return lowest_request(dir, kStandingPrefix, rank);
}

void clear_relaunch_requests(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> requests;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("rank", 0) == 0 || name.rfind(kStandingPrefix, 0) == 0) requests.push_back(entry.path());
  }
  for (const auto& path : requests) fs::remove(path, ec);
}

std::string format_batches(const std::vector<int64_t>& batches) {
  std::string out;
  for (const int64_t b : batches) out += (out.empty() ? "" : ",") + std::to_string(b);
  return out;
}

std::vector<int64_t> parse_batches(const std::string& text, const std::string& where) {
  std::vector<int64_t> out;
  bool whole = true;
  for (size_t at = 0; whole && at <= text.size();) {
    const size_t comma = std::min(text.find(',', at), text.size());
    const std::string part = text.substr(at, comma - at);
    at = comma + 1;
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(part, &used);
    } catch (const std::exception&) {
    }
    whole = !part.empty() && used == part.size() && v >= 1;
    out.push_back(v);
  }
  if (!whole || out.size() != 3)
    throw ConfigError(where + " = \"" + text + "\" is not three positive whole numbers (the micro-batch, the "
                      "accumulation steps and the evaluation batch, as \"4,2,8\"); the launcher sets it when it "
                      "starts a data-parallel run's processes again: unset it");
  return out;
}

}  // namespace ganpo
