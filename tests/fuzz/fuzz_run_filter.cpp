// The run list's filter language (ui/run_filter.h): the input is what a person types into the
// filter box. Parsing never fails hard; matching runs against several runs and configs (the
// default one, a changed one, and stored config texts that are not objects) never throws, and an
// invalid filter matches every run so the list never goes blank.
#include <QString>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "tests/fuzz/fuzz_support.h"
#include "ui/run_filter.h"

namespace {

struct Case {
  ganpo::RunRow run;
  nlohmann::json config;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = [] {
    using namespace ganpo;
    RunConfig changed;
    changed.objective.beta = 0.25;
    changed.objective.loss_type = "ipo";
    changed.ganpo.enabled = false;
    std::vector<Case> out(4);
    out[0].run.name = "dpo-baseline";
    out[0].run.tags = "baseline,paper";
    out[0].config = config_to_json(RunConfig{});
    out[1].run.name = "GANPO \xc3\xa9t\xc3\xa9 ~ run";
    out[1].run.status = RunStatus::failed;
    out[1].run.stage = "sft";
    out[1].run.tags = ",,tag with spaces,";
    out[1].config = config_to_json(changed);
    out[2].run.status = RunStatus::running;
    out[2].config = nlohmann::json::array({1, 2});
    out[3].run.name = std::string("nul\0name", 8);
    out[3].config = nullptr;
    return out;
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ganpo::ui::RunFilter;
  const RunFilter filter =
      RunFilter::parse(QString::fromUtf8(reinterpret_cast<const char*>(data), static_cast<qsizetype>(size)));
  for (const Case& c : cases()) {
    const bool match = filter.matches(c.run, c.config);
    if (!filter.valid() && !match)
      ganpo::fuzz::invariant_failed("an invalid filter hides a run", filter.error().toStdString());
  }
  if (filter.valid() && !filter.error().isEmpty()) ganpo::fuzz::invariant_failed("valid filter with an error", "");
  return 0;
}
