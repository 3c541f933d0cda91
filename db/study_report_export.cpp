#include "db/study_report_export.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "core/eval/eval_report.h"

namespace ganpo {
namespace {

const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"};

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string num(double v, int digits = 3) {
  if (!std::isfinite(v)) return "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// "mean [low, high]"; one seed has no interval; fewer seeds than `seeds` (the arm's or the pair's:
// the others lack the number, e.g. a diverged final evaluation) are said.
std::string interval_text(const Interval& i, int digits = 3, size_t seeds = 0) {
  if (i.n < 2) return num(i.mean, digits) + " (n=1, no interval)";
  return num(i.mean, digits) + " [" + num(i.low, digits) + ", " + num(i.high, digits) + "]" +
         (static_cast<size_t>(i.n) < seeds ? " (n=" + std::to_string(i.n) + ")" : "");
}

// "judge/win_rate@0.7" -> 0.7 for keys with that prefix and no bucket suffix.
std::map<double, std::string> keys_by_temperature(const std::map<std::string, Interval>& metrics, const std::string& prefix) {
  std::map<double, std::string> out;
  for (const auto& [key, i] : metrics) {
    if (key.rfind(prefix + "@", 0) != 0) continue;
    const std::string t = key.substr(prefix.size() + 1);
    if (t.find('/') != std::string::npos) continue;
    if (auto v = read_number(t)) out[*v] = key;
  }
  return out;
}

struct Series {
  std::string name;
  std::vector<double> x;
  std::vector<Interval> y;
};

// A line chart with one 95% band per series; x and y ranges from the data (y from 0 when
// `from_zero`), a dashed reference line at `guide` when it is finite. The legend goes under the
// plot, one series a row, and the picture is as wide as its longest name: series are arms, whose
// names ("objective.loss_type=sigmoid, ganpo.enabled=false, data.label_noise=0") are long and
// alike in their first characters, so a legend column beside the plot would cut them all to the
// same text.
std::string line_chart(const std::string& title, const std::string& x_label, const std::string& y_label,
                       const std::vector<Series>& series, bool from_zero, double guide = NAN) {
  constexpr double kLegendRow = 18, kCharWidth = 7.5;  // 12 px sans-serif, generously
  const double plot_width = 720, plot_height = 360, left = 60, right = 20, top = 34, bottom = 46;
  size_t longest = 0;
  for (const auto& s : series) longest = std::max(longest, s.name.size());
  const double W = std::max(plot_width, left + 16 + kCharWidth * static_cast<double>(longest) + 10);
  const double H = plot_height + 14 + kLegendRow * static_cast<double>(series.size());
  double x0 = INFINITY, x1 = -INFINITY, y0 = from_zero ? 0 : INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i].low), y1 = std::max(y1, s.y[i].high);
    }
  if (std::isfinite(guide)) y0 = std::min(y0, guide), y1 = std::max(y1, guide);
  if (!std::isfinite(x0)) return "";
  if (x1 == x0) x0 -= 0.5, x1 += 0.5;
  if (y1 - y0 < 1e-9) y0 -= 0.5, y1 += 0.5;
  const double pad = (y1 - y0) * 0.08;
  y1 += pad;
  if (!from_zero || y0 < 0) y0 -= pad;
  const double pw = plot_width - left - right, ph = plot_height - top - bottom;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * ph; };
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(W, 0) + "\" height=\"" + num(H, 0) +
                    "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  svg += "<text x=\"" + num(left, 0) + "\" y=\"20\" font-size=\"14\" font-weight=\"bold\">" + escape(title) + "</text>\n";
  svg += "<rect x=\"" + num(left, 1) + "\" y=\"" + num(top, 1) + "\" width=\"" + num(pw, 1) + "\" height=\"" + num(ph, 1) +
         "\" fill=\"none\" stroke=\"#999\"/>\n";
  for (int k = 0; k <= 4; ++k) {  // y ticks
    const double v = y0 + (y1 - y0) * k / 4;
    svg += "<line x1=\"" + num(left - 4, 1) + "\" x2=\"" + num(left + pw, 1) + "\" y1=\"" + num(py(v), 1) + "\" y2=\"" +
           num(py(v), 1) + "\" stroke=\"#eee\"/><text x=\"" + num(left - 6, 1) + "\" y=\"" + num(py(v) + 4, 1) +
           "\" text-anchor=\"end\">" + num(v, 2) + "</text>\n";
  }
  std::set<double> xs;
  for (const auto& s : series) xs.insert(s.x.begin(), s.x.end());
  for (double x : xs)
    svg += "<text x=\"" + num(px(x), 1) + "\" y=\"" + num(top + ph + 16, 1) + "\" text-anchor=\"middle\">" + num(x, 2) +
           "</text>\n";
  svg += "<text x=\"" + num(left + pw / 2, 1) + "\" y=\"" + num(plot_height - 8, 1) + "\" text-anchor=\"middle\">" +
         escape(x_label) + "</text>\n";
  svg += "<text transform=\"translate(14," + num(top + ph / 2, 1) + ") rotate(-90)\" text-anchor=\"middle\">" +
         escape(y_label) + "</text>\n";
  if (std::isfinite(guide))
    svg += "<line x1=\"" + num(left, 1) + "\" x2=\"" + num(left + pw, 1) + "\" y1=\"" + num(py(guide), 1) + "\" y2=\"" +
           num(py(guide), 1) + "\" stroke=\"#555\" stroke-dasharray=\"4 3\"/>\n";
  for (size_t s = 0; s < series.size(); ++s) {
    const auto& S = series[s];
    const std::string colour = kColours[s % std::size(kColours)];
    std::string band, line;
    for (size_t i = 0; i < S.x.size(); ++i) band += num(px(S.x[i]), 1) + "," + num(py(S.y[i].high), 1) + " ";
    for (size_t i = S.x.size(); i-- > 0;) band += num(px(S.x[i]), 1) + "," + num(py(S.y[i].low), 1) + " ";
    for (size_t i = 0; i < S.x.size(); ++i) line += num(px(S.x[i]), 1) + "," + num(py(S.y[i].mean), 1) + " ";
    svg += "<polygon points=\"" + band + "\" fill=\"" + colour + "\" fill-opacity=\"0.15\" stroke=\"none\"/>\n";
    svg += "<polyline points=\"" + line + "\" fill=\"none\" stroke=\"" + colour + "\" stroke-width=\"2\"/>\n";
    for (size_t i = 0; i < S.x.size(); ++i)
      svg += "<circle cx=\"" + num(px(S.x[i]), 1) + "\" cy=\"" + num(py(S.y[i].mean), 1) + "\" r=\"3\" fill=\"" + colour +
             "\"><title>" + escape(S.name) + ": " + interval_text(S.y[i]) + "</title></circle>\n";
    const double ly = plot_height + 14 + kLegendRow * static_cast<double>(s);
    svg += "<rect x=\"" + num(left, 1) + "\" y=\"" + num(ly - 8, 1) + "\" width=\"10\" height=\"10\" fill=\"" + colour +
           "\"/><text x=\"" + num(left + 16, 1) + "\" y=\"" + num(ly + 1, 1) + "\">" + escape(S.name) + "</text>\n";
  }
  return svg + "</svg>\n";
}

// Horizontal bars with interval whiskers, one per arm; the names column as wide as the longest name
// (right-aligned names longer than it would lose their first characters off the picture's edge).
std::string bar_chart(const std::string& title, const std::string& x_label, const std::vector<std::string>& names,
                      const std::vector<Interval>& values) {
  if (names.empty()) return "";
  size_t longest = 0;
  for (const auto& n : names) longest = std::max(longest, n.size());
  const double left = std::max(330.0, 16 + 7.5 * static_cast<double>(longest)), right = 40, top = 34, row = 24,
               bottom = 40, W = left + 350 + right;
  const double H = top + row * static_cast<double>(names.size()) + bottom, pw = W - left - right;
  double hi = 0;
  for (const auto& v : values) hi = std::max(hi, std::max(v.high, v.mean));
  if (hi <= 0) hi = 1;
  hi *= 1.1;
  auto px = [&](double x) { return left + x / hi * pw; };
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(W, 0) + "\" height=\"" + num(H, 0) +
                    "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  svg += "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">" + escape(title) + "</text>\n";
  for (size_t i = 0; i < names.size(); ++i) {
    const double y = top + row * static_cast<double>(i);
    const Interval& v = values[i];
    svg += "<text x=\"" + num(left - 6, 1) + "\" y=\"" + num(y + 15, 1) + "\" text-anchor=\"end\">" + escape(names[i]) +
           "</text>\n";
    svg += "<rect x=\"" + num(left, 1) + "\" y=\"" + num(y + 4, 1) + "\" width=\"" + num(px(v.mean) - left, 1) +
           "\" height=\"" + num(row - 8, 1) + "\" fill=\"" + kColours[i % std::size(kColours)] + "\" fill-opacity=\"0.7\"><title>" +
           escape(names[i]) + ": " + interval_text(v, 4) + "</title></rect>\n";
    svg += "<line x1=\"" + num(px(v.low), 1) + "\" x2=\"" + num(px(v.high), 1) + "\" y1=\"" + num(y + row / 2, 1) +
           "\" y2=\"" + num(y + row / 2, 1) + "\" stroke=\"#000\"/>\n";
  }
  const double axis = top + row * static_cast<double>(names.size()) + 4;
  for (int k = 0; k <= 4; ++k) {
    const double v = hi * k / 4;
    svg += "<text x=\"" + num(px(v), 1) + "\" y=\"" + num(axis + 14, 1) + "\" text-anchor=\"middle\">" + num(v, 3) +
           "</text>\n";
  }
  svg += "<text x=\"" + num(left + pw / 2, 1) + "\" y=\"" + num(H - 6, 1) + "\" text-anchor=\"middle\">" + escape(x_label) +
         "</text>\n";
  return svg + "</svg>\n";
}

// The arm's grid values except one key, as a label ("objective.loss_type=simpo").
std::string label_without(const ArmResult& arm, const std::string& key) {
  std::string out;
  for (const auto& [k, v] : arm.values)
    if (k != key) out += (out.empty() ? "" : ", ") + k + "=" + v;
  return out.empty() ? "all arms" : out;
}

std::string verdict(const Interval& i, bool head_to_head) {
  const std::string text = escape(verdict_text(i, head_to_head));
  return verdict_called(i, head_to_head) ? "<b>" + text + "</b>" : text;
}

}  // namespace

std::string study_report_html(const StudyReport& report) {
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Study " +
                  std::to_string(report.study_id) + ": " + escape(report.name) + "</title>\n<style>"
                  "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
                  "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
                  "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
                  "th{background:#f4f4f4}.note{color:#555}</style></head><body>\n";
  h += "<h1>Study " + std::to_string(report.study_id) + ": " + escape(report.name) + "</h1>\n";
  char wall[64];
  std::snprintf(wall, sizeof wall, "%dh %02dm", static_cast<int>(report.wall_seconds / 3600),
                static_cast<int>(std::fmod(report.wall_seconds, 3600) / 60));
  h += "<p class=\"note\">" + std::to_string(report.completed) + " of " + std::to_string(report.runs) +
       " runs completed; wall time " + wall +
       ". Every number is a mean over an arm's completed seeds with its 95% Student's t interval (mean &plusmn; "
       "t &middot; s / &radic;n; n is given where a number has fewer seeds than its arm or pair); a difference is "
       "called only when its interval excludes 0 (0.5 for head-to-head win rates), and never from one seed.</p>\n";

  // The answer, stated plainly.
  h += "<h2>The answer: GANPO on against GANPO off</h2>\n";
  if (report.ganpo_vs_base.empty()) h += "<p>The grid does not vary ganpo.enabled, so there is no pair to compare.</p>\n";
  if (const std::string note = multiplicity_note(count_verdicts(report, /*headline_only=*/true)); !note.empty())
    h += "<p class=\"note\">" + escape(note) + "</p>\n";
  for (const auto& p : report.ganpo_vs_base) {
    h += "<h3>" + escape(p.arm) + "<br><small>against " + escape(p.baseline) + " (" + std::to_string(p.seeds.size()) +
         " paired seeds)</small></h3>\n<table><tr><th>number</th><th>GANPO on minus off</th><th>verdict</th></tr>\n";
    for (const auto& [key, i] : p.differences)
      if (is_headline_metric(key))
        h += "<tr><td>" + escape(key) + "</td><td>" + interval_text(i, 4, p.seeds.size()) + "</td><td>" + verdict(i, false) + "</td></tr>\n";
    for (const auto& [key, i] : p.win_rate_vs_baseline)
      h += "<tr><td>" + escape(key) + "</td><td>" + interval_text(i, 4, p.seeds.size()) + "</td><td>" + verdict(i, true) + "</td></tr>\n";
    h += "</table>\n";
  }

  // Win rate vs temperature per arm.
  std::vector<Series> win;
  for (const auto& a : report.arms) {
    Series s{a.arm, {}, {}};
    for (const auto& [t, key] : keys_by_temperature(a.metrics, "judge/win_rate")) s.x.push_back(t), s.y.push_back(a.metrics.at(key));
    if (!s.x.empty()) win.push_back(std::move(s));
  }
  if (!win.empty())
    h += "<h2>Win rate against the reference by sampling temperature</h2>\n" +
         line_chart("Judge win rate vs the reference (95% bands)", "sampling temperature", "win rate", win, true, 0.5);
  std::vector<Series> head;
  for (const auto& p : report.ganpo_vs_base) {
    Series s{p.arm, {}, {}};
    for (const auto& [t, key] : keys_by_temperature(p.win_rate_vs_baseline, "judge/win_rate_vs_base"))
      s.x.push_back(t), s.y.push_back(p.win_rate_vs_baseline.at(key));
    if (!s.x.empty()) head.push_back(std::move(s));
  }
  if (!head.empty())
    h += "<h2>GANPO against its base arm, head to head</h2>\n" +
         line_chart("Win rate of the GANPO policy over the matched base policy", "sampling temperature", "win rate", head,
                    true, 0.5);

  // Accuracy vs label noise, one line per arm without the noise key.
  const std::string noise = "data.label_noise";
  std::map<std::string, Series> by_rest;
  for (const auto& a : report.arms) {
    auto value = std::find_if(a.values.begin(), a.values.end(), [&](const auto& kv) { return kv.first == noise; });
    auto acc = a.metrics.find("eval_rewards/accuracies");
    const auto x = value == a.values.end() ? std::nullopt : read_number(value->second);
    if (!x || acc == a.metrics.end()) continue;
    Series& s = by_rest[label_without(a, noise)];
    s.name = label_without(a, noise);
    s.x.push_back(*x);
    s.y.push_back(acc->second);
  }
  if (!by_rest.empty()) {
    std::vector<Series> acc;
    for (auto& [name, s] : by_rest) {
      // In noise order, whatever order the grid lists the values in.
      std::vector<size_t> order(s.x.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      const std::vector<double>& x = s.x;  // a lambda may not capture a structured binding (C++17)
      std::sort(order.begin(), order.end(), [&x](size_t a, size_t b) { return x[a] < x[b]; });
      Series sorted{s.name, {}, {}};
      for (size_t i : order) sorted.x.push_back(s.x[i]), sorted.y.push_back(s.y[i]);
      acc.push_back(std::move(sorted));
    }
    h += "<h2>Preference accuracy against label noise</h2>\n" +
         line_chart("Held-out preference accuracy (95% bands)", "label noise (fraction of training pairs swapped)",
                    "accuracy", acc, false, 0.5);
  }

  // Overhead.
  std::vector<std::string> names;
  std::vector<Interval> step_times;
  for (const auto& a : report.arms)
    if (auto it = a.metrics.find("step_time_s"); it != a.metrics.end()) names.push_back(a.arm), step_times.push_back(it->second);
  if (!names.empty())
    h += "<h2>Cost: optimizer step time per arm</h2>\n" + bar_chart("Seconds per optimizer step (95% intervals)", "seconds", names, step_times);

  // Tables.
  std::set<std::string> keys;
  for (const auto& a : report.arms)
    for (const auto& [key, i] : a.metrics)
      if (is_headline_metric(key) || key == "tokens_per_s") keys.insert(key);
  h += "<h2>Arms</h2>\n<table><tr><th>arm</th><th>seeds</th>";
  for (const auto& k : keys) h += "<th>" + escape(k) + "</th>";
  h += "</tr>\n";
  for (const auto& a : report.arms) {
    h += "<tr><td>" + escape(a.arm) + "</td><td>" + escape(arm_seeds_text(a, report.state)) + "</td>";
    for (const auto& k : keys) {
      auto it = a.metrics.find(k);
      h += "<td>" + (it == a.metrics.end() ? std::string() : interval_text(it->second, 3, a.seeds.size())) + "</td>";
    }
    h += "</tr>\n";
  }
  h += "</table>\n<details><summary>Every number per arm</summary>\n";
  for (const auto& a : report.arms) {
    h += "<h3>" + escape(a.arm) + "</h3><table><tr><th>number</th><th>mean [95% interval]</th><th>n</th></tr>\n";
    for (const auto& [key, i] : a.metrics)
      h += "<tr><td>" + escape(key) + "</td><td>" + interval_text(i, 4) + "</td><td>" + std::to_string(i.n) + "</td></tr>\n";
    h += "</table>\n";
  }
  h += "</details>\n</body></html>\n";
  return h;
}

std::string study_report_csv(const StudyReport& report) {
  std::string out = "section,arm,baseline,metric,mean,low,high,n,called\n";
  auto field = [](const std::string& s) {
    if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  auto row = [&](const char* section, const std::string& arm, const std::string& baseline, const std::string& key,
                 const Interval& i, const std::string& called) {
    out += std::string(section) + "," + field(arm) + "," + field(baseline) + "," + field(key) + "," + num(i.mean, 6) + "," +
           num(i.low, 6) + "," + num(i.high, 6) + "," + std::to_string(i.n) + "," + called + "\n";
  };
  for (const auto& a : report.arms)
    for (const auto& [key, i] : a.metrics) row("arm", a.arm, "", key, i, "");
  for (const auto& p : report.ganpo_vs_base) {
    for (const auto& [key, i] : p.differences) row("difference", p.arm, p.baseline, key, i, i.excludes_zero() ? "true" : "false");
    for (const auto& [key, i] : p.win_rate_vs_baseline)
      row("head_to_head", p.arm, p.baseline, key, i, i.excludes(0.5) ? "true" : "false");
  }
  return out;
}

}  // namespace ganpo
