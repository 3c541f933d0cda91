#include "db/run_speed.h"

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "core/run_work.h"

namespace ganpo {

WorkSpeed measured_work_speed(RunStore& store, int most_recent) {
  std::vector<RunRow> runs = store.runs();
  std::sort(runs.begin(), runs.end(), [](const RunRow& a, const RunRow& b) {
    return a.finished_at.value_or(0) > b.finished_at.value_or(0);
  });
  // Runs started more than once by a study's retry held a worker for an attempt that failed too
  // (its work done twice), which their held time counts.
  std::set<int64_t> restarted;
  sql::Statement again(store.database(), "SELECT id FROM runs WHERE attempts > 1");
  while (again.step()) restarted.insert(again.col_int(0));
  std::vector<double> speeds;
  for (const RunRow& r : runs) {
    if (static_cast<int>(speeds.size()) >= most_recent) break;
    const double seconds = run_duration_seconds(r, r.finished_at.value_or(0));
    if (r.status != RunStatus::completed || !r.finished_at || seconds <= 0) continue;
    if (restarted.count(r.id)) continue;
    try {
      const RunConfig config = config_from_json(nlohmann::json::parse(r.config_json));
      const double work = run_work(config).total();
      if (work > 0) speeds.push_back(work / seconds);
    } catch (const std::exception&) {
      // A config this build cannot read says nothing about speed.
    }
  }
  if (speeds.empty()) return {reference_work_per_second(), 0};
  std::nth_element(speeds.begin(), speeds.begin() + speeds.size() / 2, speeds.end());
  return {speeds[speeds.size() / 2], static_cast<int>(speeds.size())};
}

DurationEstimate estimate_duration(const std::vector<RunConfig>& runs, const WorkSpeed& speed) {
  DurationEstimate e;
  double work = 0;
  for (const RunConfig& c : runs) work += run_work(c).total();
  e.seconds = speed.work_per_second > 0 ? work / speed.work_per_second : 0;
  e.basis = speed.runs > 0 ? "at the speed of the last " + std::to_string(speed.runs) + " finished run(s) of this workspace"
                           : "at the built-in 2-core CPU figure (no finished run in this workspace to measure)";
  return e;
}

}  // namespace ganpo
