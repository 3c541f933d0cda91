// A study report as files a person keeps or shares: a self-contained HTML page (no scripts, no
// external files; plots drawn as inline SVG) and CSV.
//
// The page states the answer first (every GANPO-on arm against its matched GANPO-off arm: which
// differences are called and which are not), then plots win rate against the reference by
// sampling temperature per arm with 95% interval bands, GANPO's head-to-head win rate against its
// base arm by temperature, preference accuracy against label noise (when the grid varies it),
// and the step time per arm (GANPO's overhead), then the tables. The CSV has one row per number:
// section (arm | difference | head_to_head), arm, baseline, metric, mean, low, high, n, called.
// Numbers are printed locale-free. No Qt, no torch.
#pragma once

#include <string>

#include "db/study_report.h"

namespace ganpo {

std::string study_report_html(const StudyReport& report);
std::string study_report_csv(const StudyReport& report);

}  // namespace ganpo
