// A study report as HTML and CSV: the answer stated (called and not called), every plot present
// as inline SVG when its numbers exist, nothing external, and one CSV row per number with the
// stored values.
#include "db/study_report_export.h"

#include <gtest/gtest.h>

#include <sstream>

namespace ganpo {
namespace {

Interval interval(double mean, double low, double high, int64_t n = 3) {
  Interval i;
  i.mean = mean, i.low = low, i.high = high, i.n = n;
  return i;
}

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

StudyReport sample_report() {
  StudyReport r;
  r.study_id = 4;
  r.name = "dpo <vs> ganpo";
  r.runs = 13;
  r.completed = 13;
  r.wall_seconds = 3725;
  for (const char* noise : {"0", "0.2"})
    for (const char* ganpo : {"false", "true"}) {
      ArmResult a;
      a.values = {{"data.label_noise", noise}, {"ganpo.enabled", ganpo}};
      a.arm = std::string("data.label_noise=") + noise + ", ganpo.enabled=" + ganpo;
      a.seeds = {1, 2, 3};
      const double up = std::string(ganpo) == "true" ? 0.05 : 0.0;
      const double down = std::string(noise) == "0" ? 0.0 : 0.1;
      a.metrics["eval_rewards/accuracies"] = interval(0.8 + up - down, 0.75 + up - down, 0.85 + up - down);
      a.metrics["judge/win_rate@0.5"] = interval(0.6 + up, 0.55 + up, 0.65 + up);
      a.metrics["judge/win_rate@1.0"] = interval(0.55 + up, 0.5 + up, 0.6 + up);
      a.metrics["judge/win_rate@1.0/short"] = interval(0.5, 0.4, 0.6);
      a.metrics["step_time_s"] = interval(0.2 + up, 0.19 + up, 0.21 + up);
      r.arms.push_back(a);
    }
  PairedResult p;
  p.arm = r.arms[1].arm;
  p.baseline = r.arms[0].arm;
  p.seeds = {1, 2, 3};
  p.differences["eval_rewards/accuracies"] = interval(0.05, 0.02, 0.08);
  p.differences["judge/win_rate@1.0"] = interval(0.01, -0.03, 0.05);
  p.win_rate_vs_baseline["judge/win_rate_vs_base@1.0"] = interval(0.58, 0.52, 0.64);
  r.ganpo_vs_base.push_back(p);
  return r;
}

TEST(StudyReportExport, HtmlStatesTheAnswerAndDrawsEveryPlot) {
  const std::string html = study_report_html(sample_report());
  EXPECT_NE(html.find("<title>Study 4: dpo &lt;vs&gt; ganpo</title>"), std::string::npos);
  EXPECT_NE(html.find("13 of 13 runs completed; wall time 1h 02m"), std::string::npos);
  // The called difference and the one that is not.
  EXPECT_NE(html.find("<td>eval_rewards/accuracies</td><td>0.0500 [0.0200, 0.0800]</td><td><b>higher with GANPO</b>"),
            std::string::npos);
  EXPECT_NE(html.find("<td>judge/win_rate@1.0</td><td>0.0100 [-0.0300, 0.0500]</td><td>no difference shown (interval contains 0)"),
            std::string::npos);
  EXPECT_NE(html.find("<b>GANPO judged better</b>"), std::string::npos);
  // Three numbers tested (two headline differences, one head to head), two called; what chance gives.
  const VerdictCount verdicts = count_verdicts(sample_report(), /*headline_only=*/true);
  EXPECT_EQ(verdicts.tested, 3);
  EXPECT_EQ(verdicts.called, 2);
  EXPECT_NEAR(verdicts.by_chance(), 0.15, 1e-12);
  EXPECT_NE(html.find("3 numbers are tested at 95 % each, 2 called: where GANPO changes nothing, about 0.2"),
            std::string::npos);
  for (const char* plot : {"Judge win rate vs the reference", "Win rate of the GANPO policy over the matched base policy",
                           "Held-out preference accuracy", "Seconds per optimizer step"})
    EXPECT_NE(html.find(plot), std::string::npos) << plot;
  EXPECT_EQ(count(html, "<svg"), 4u);
  EXPECT_EQ(count(html, "<svg"), count(html, "</svg>"));
  // Four win-rate series and two accuracy-vs-noise lines (one per ganpo.enabled value).
  EXPECT_EQ(count(html, "<polyline"), 4u + 1u + 2u);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg"));  // no external file
}

// Every name an SVG writes (legend entries, bar labels) lies inside its picture: arms are named by
// all their grid values, long and alike in their first characters, and a name cut at the picture's
// edge leaves series that cannot be told apart. At 12 px sans-serif a character is under 7 px wide.
TEST(StudyReportExport, EveryArmNameFitsInsideItsPlot) {
  StudyReport r = sample_report();
  for (ArmResult& a : r.arms) a.arm = "objective.loss_type=sigmoid, " + a.arm + ", data.max_length=200";
  r.ganpo_vs_base[0].arm = r.arms[1].arm;
  r.ganpo_vs_base[0].baseline = r.arms[0].arm;
  const std::string html = study_report_html(r);
  size_t checked = 0;
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1)) {
    const size_t end = html.find("</svg>", at);
    ASSERT_NE(end, std::string::npos);
    const std::string svg = html.substr(at, end - at);
    const size_t w = svg.find("width=\"");
    const double width = std::stod(svg.substr(w + 7));
    for (const ArmResult& a : r.arms) {
      const std::string text = "\">" + a.arm + "</text>";
      for (size_t t = svg.find(text); t != std::string::npos; t = svg.find(text, t + 1)) {
        const size_t open = svg.rfind("<text x=\"", t);
        ASSERT_NE(open, std::string::npos);
        const double x = std::stod(svg.substr(open + 9));
        const bool right_aligned = svg.substr(open, t - open).find("text-anchor=\"end") != std::string::npos;
        const double extent = 6.5 * static_cast<double>(a.arm.size());
        if (right_aligned)
          EXPECT_GE(x - extent, 0.0) << a.arm;
        else
          EXPECT_LE(x + extent, width) << a.arm;
        ++checked;
      }
    }
  }
  // Four in the win-rate legend, one in the head-to-head legend, four step-time bars (the
  // accuracy-against-noise lines are named without the noise value).
  EXPECT_EQ(checked, 4u + 1u + 4u);
}

// Numbers equal in both arms at every seed are no test: the reference policy's own judge scores
// (the same shared model under both arms), the number of evaluation pairs, a head to head of ties
// only. Counted, they would raise what chance alone is said to call.
TEST(StudyReportExport, NumbersEqualInBothArmsAreNotCountedAsTests) {
  StudyReport r = sample_report();
  PairedResult& p = r.ganpo_vs_base[0];
  p.differences["eval_pairs"] = interval(0, 0, 0);
  p.differences["judge/reference_score@1.0"] = interval(0, 0, 0);
  p.win_rate_vs_baseline["judge/win_rate_vs_base@0.5"] = interval(0.5, 0.5, 0.5);
  const VerdictCount all = count_verdicts(r, /*headline_only=*/false);
  EXPECT_EQ(all.tested, 3);
  EXPECT_EQ(all.called, 2);
  // A difference that is the same nonzero value at every seed still counts (and is called).
  p.differences["eval_rewards/margins"] = interval(0.1, 0.1, 0.1);
  EXPECT_EQ(count_verdicts(r, /*headline_only=*/true).tested, 4);
  EXPECT_EQ(count_verdicts(r, /*headline_only=*/true).called, 3);
}

// A difference from one seed has no interval, so its verdict says so rather than "interval
// contains 0" beside a printed value that is not 0.
TEST(StudyReportExport, OneSeedGivesNoVerdictRatherThanAnIntervalThatContainsZero) {
  StudyReport r = sample_report();
  PairedResult& p = r.ganpo_vs_base[0];
  p.seeds = {1};
  p.differences["eval_rewards/accuracies"] = interval(0.05, 0.05, 0.05, 1);
  p.win_rate_vs_baseline["judge/win_rate_vs_base@1.0"] = interval(0.8, 0.8, 0.8, 1);
  EXPECT_EQ(verdict_text(p.differences["eval_rewards/accuracies"], false), "no verdict from one seed (no interval)");
  EXPECT_EQ(verdict_text(p.win_rate_vs_baseline["judge/win_rate_vs_base@1.0"], true), "no verdict from one seed (no interval)");
  const std::string html = study_report_html(r);
  EXPECT_NE(html.find("<td>eval_rewards/accuracies</td><td>0.0500 (n=1, no interval)</td><td>no verdict from one seed"),
            std::string::npos);
  EXPECT_EQ(html.find("0.0500 (n=1, no interval)</td><td>no difference shown"), std::string::npos);
}

TEST(StudyReportExport, CsvHasOneRowPerNumber) {
  const StudyReport r = sample_report();
  const std::string csv = study_report_csv(r);
  std::istringstream in(csv);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 1u + 4 * 5 + 2 + 1);
  EXPECT_EQ(lines[0], "section,arm,baseline,metric,mean,low,high,n,called");
  EXPECT_EQ(lines[1], "arm,\"data.label_noise=0, ganpo.enabled=false\",,eval_rewards/accuracies,0.800000,0.750000,0.850000,3,");
  EXPECT_EQ(lines.back(),
            "head_to_head,\"data.label_noise=0, ganpo.enabled=true\",\"data.label_noise=0, ganpo.enabled=false\","
            "judge/win_rate_vs_base@1.0,0.580000,0.520000,0.640000,3,true");
  EXPECT_NE(csv.find(",judge/win_rate@1.0,0.010000,-0.030000,0.050000,3,false"), std::string::npos);
}

}  // namespace
}  // namespace ganpo
