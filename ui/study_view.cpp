#include "ui/study_view.h"

#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QMainWindow>
#include <QMessageBox>
#include <QProcess>
#include <QPushButton>
#include <QSaveFile>
#include <QSplitter>
#include <QStatusBar>
#include <QTableWidget>
#include <QTabWidget>
#include <QVBoxLayout>

#include <signal.h>

#include <map>
#include <optional>
#include <set>

#include "core/eval/eval_report.h"
#include "db/study_queue.h"
#include "db/study_report.h"
#include "db/study_report_export.h"
#include "ui/chart_qcustomplot.h"
#include "ui/chart_style.h"
#include "ui/run_list_model.h"
#include "ui/store_worker.h"
#include "ui/worker_launcher.h"

namespace ganpo::ui {

// Everything the tab shows, read in one go on the store thread.
struct StudySnapshot {
  StudyRow study;
  StudyCounts counts;
  std::vector<RunRow> runs;
  StudyReport report;
};

namespace {

constexpr int kRefreshMs = 3000;

QTableWidgetItem* cell(const QString& text, bool right = false) {
  auto* item = new QTableWidgetItem(text);
  item->setFlags(Qt::ItemIsEnabled | Qt::ItemIsSelectable);
  item->setTextAlignment((right ? Qt::AlignRight : Qt::AlignLeft) | Qt::AlignVCenter);
  return item;
}

// One seed has no interval: "x [x, x]" would read as a certain number (as the HTML report says it).
QString interval_text(const Interval& i) {
  if (i.n < 2) return QStringLiteral("%1 (n=1, no interval)").arg(i.mean, 0, 'f', 3);
  return QStringLiteral("%1 [%2, %3]").arg(i.mean, 0, 'f', 3).arg(i.low, 0, 'f', 3).arg(i.high, 0, 'f', 3);
}

// The arms table's columns: held-out accuracy and margin, every temperature's win rate against
// the reference, the response length at the middle temperature, step time.
std::vector<std::string> arm_columns(const StudyReport& report) {
  std::set<std::string> win, length;
  for (const auto& a : report.arms)
    for (const auto& [key, i] : a.metrics) {
      if (key.rfind("judge/win_rate@", 0) == 0 && key.find('/', 6) == std::string::npos) win.insert(key);
      if (key.rfind("judge/policy_length@", 0) == 0 && key.find('/', 6) == std::string::npos) length.insert(key);
    }
  std::vector<std::string> cols{"eval_rewards/accuracies", "eval_rewards/margins"};
  // Temperatures in numeric order ("judge/win_rate@0.5" < "...@1.0" as text too, but not "@10").
  std::vector<std::pair<double, std::string>> by_t;
  for (const auto& k : win)
    if (auto t = read_number(k.substr(k.find('@') + 1))) by_t.emplace_back(*t, k);
  std::sort(by_t.begin(), by_t.end());
  for (const auto& [t, k] : by_t) cols.push_back(k);
  if (!length.empty()) cols.push_back(length.count("judge/policy_length@1.0") ? "judge/policy_length@1.0" : *length.begin());
  cols.push_back("step_time_s");
  return cols;
}

// An arm as a legend entry: the last part of each grid key and its value
// ("loss_type=simpo, enabled=true, label_noise=0.2").
QString short_arm(const ArmResult& arm) {
  QStringList parts;
  for (const auto& [key, value] : arm.values)
    parts << QString::fromStdString(key.substr(key.rfind('.') + 1) + "=" + value);
  return parts.isEmpty() ? QString::fromStdString(arm.arm) : parts.join(QStringLiteral(", "));
}

QString column_title(const std::string& key) {
  if (key == "eval_rewards/accuracies") return QStringLiteral("Pref. accuracy");
  if (key == "eval_rewards/margins") return QStringLiteral("Margin");
  if (key == "step_time_s") return QStringLiteral("Step time (s)");
  if (key.rfind("judge/win_rate@", 0) == 0) return QStringLiteral("Win @ %1").arg(QString::fromStdString(key.substr(15)));
  if (key.rfind("judge/policy_length@", 0) == 0)
    return QStringLiteral("Length @ %1").arg(QString::fromStdString(key.substr(20)));
  return QString::fromStdString(key);
}

}  // namespace

StudyView::StudyView(StoreWorker* store, int64_t study_id, QString worker_program, QWidget* parent)
    : QWidget(parent), store_(store), study_id_(study_id), worker_program_(std::move(worker_program)) {
  auto* layout = new QVBoxLayout(this);
  auto* top = new QHBoxLayout;
  summary_ = new QLabel(tr("Reading study %1…").arg(study_id), this);
  summary_->setObjectName(QStringLiteral("study.summary"));
  summary_->setWordWrap(true);
  top->addWidget(summary_, 1);
  run_queue_ = new QPushButton(tr("Run queue"), this);
  run_queue_->setObjectName(QStringLiteral("study.runQueue"));
  run_queue_->setToolTip(tr("Start the study's queued runs one after another (ganpo study run), also after this "
                            "window closes"));
  connect(run_queue_, &QPushButton::clicked, this, [this] {
    QString why;
    if (!runQueue(&why)) QMessageBox::warning(this, tr("Run queue"), why);
  });
  pause_ = new QPushButton(tr("Pause"), this);
  pause_->setToolTip(tr("Start no further runs of this study (running ones go on)"));
  resume_ = new QPushButton(tr("Resume"), this);
  cancel_ = new QPushButton(tr("Cancel study"), this);
  cancel_->setToolTip(tr("Stop the study's running runs and start no more; finished runs are kept. Resume queues "
                         "the stopped runs again and starts the queue"));
  export_ = new QPushButton(tr("Export report…"), this);
  export_->setToolTip(tr("A self-contained HTML report (plots as SVG), CSV and JSON"));
  for (auto* b : {run_queue_, pause_, resume_, cancel_, export_}) top->addWidget(b);
  layout->addLayout(top);
  connect(pause_, &QPushButton::clicked, this, [this] { setState("paused"); });
  connect(resume_, &QPushButton::clicked, this, [this] {
    // A cancelled study's driver has ended (a paused one waits): its runs, queued again, need
    // one started, or nothing would start them until Run queue.
    const bool was_cancelled = last_ && last_->study.state == StudyState::cancelled;
    setState("active", [this, was_cancelled] {
      QString why;
      if (was_cancelled && !runQueue(&why)) QMessageBox::warning(this, tr("Resume"), why);
    });
  });
  connect(cancel_, &QPushButton::clicked, this, [this] {
    if (QMessageBox::question(this, tr("Cancel study"),
                              tr("Stop the running runs of this study and start no more? Finished runs are kept.")) ==
        QMessageBox::Yes)
      setState("cancelled");
  });
  connect(export_, &QPushButton::clicked, this, [this] {
    const QString folder = QFileDialog::getExistingDirectory(this, tr("Export the study report to"));
    if (folder.isEmpty()) return;
    const QStringList existing = existingExportFiles(folder);
    if (!existing.isEmpty() &&
        QMessageBox::question(this, tr("Export report"),
                              tr("%1 already holds %2. Replace them?").arg(QDir::toNativeSeparators(folder), existing.join(", "))) !=
            QMessageBox::Yes)
      return;
    QString why;
    if (!exportReport(folder, &why)) {
      QMessageBox::warning(this, tr("Export report"), why);
      return;
    }
    // Said where it went, in the window's status bar (an export gave no sign it had happened).
    if (auto* main = qobject_cast<QMainWindow*>(window()))
      main->statusBar()->showMessage(tr("Study report written to %1 (study-%2.html, .csv, .json)")
                                         .arg(QDir::toNativeSeparators(folder))
                                         .arg(study_id_),
                                     10000);
  });

  auto* split = new QSplitter(Qt::Vertical, this);
  arms_ = new QTableWidget(split);
  arms_->setObjectName(QStringLiteral("study.arms"));
  arms_->setToolTip(tr("Mean [95% interval] over the arm's completed seeds; double-click an arm to compare its runs"));
  connect(arms_, &QTableWidget::cellDoubleClicked, this, [this](int row, int) {
    if (row >= 0 && row < static_cast<int>(arm_runs_.size())) Q_EMIT armActivated(arm_runs_[static_cast<size_t>(row)]);
  });
  // The verdicts, and under them how many of them chance alone would call.
  auto* verdicts = new QWidget(split);
  auto* verdicts_layout = new QVBoxLayout(verdicts);
  verdicts_layout->setContentsMargins(0, 0, 0, 0);
  differences_ = new QTableWidget(verdicts);
  differences_->setObjectName(QStringLiteral("study.differences"));
  verdicts_layout->addWidget(differences_, 1);
  multiplicity_ = new QLabel(verdicts);
  multiplicity_->setObjectName(QStringLiteral("study.multiplicity"));
  multiplicity_->setWordWrap(true);
  multiplicity_->hide();
  verdicts_layout->addWidget(multiplicity_);
  auto* bottom = new QSplitter(Qt::Horizontal, split);
  // Three plots: win rate against temperature, accuracy against label noise, step time per arm.
  plots_ = new QTabWidget(bottom);
  QFont legend_font = font();
  legend_font.setPointSizeF(legend_font.pointSizeF() * 0.85);
  auto make_plot = [&](const QString& title, const QString& x, const QString& y) {
    auto* p = new QCustomPlot(plots_);
    p->setMinimumHeight(220);
    p->xAxis->setLabel(x);
    p->yAxis->setLabel(y);
    p->legend->setVisible(true);
    p->legend->setFont(legend_font);
    p->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignBottom | Qt::AlignLeft);
    apply_chart_palette(p, palette());
    plots_->addTab(p, title);
    return p;
  };
  plot_ = make_plot(tr("Win rate vs temperature"), tr("sampling temperature"), tr("win rate vs reference"));
  noise_plot_ = make_plot(tr("Accuracy vs label noise"), tr("data.label_noise"), tr("held-out preference accuracy"));
  time_plot_ = make_plot(tr("Step time per arm"), QString(), tr("step time (s)"));
  time_plot_->legend->setVisible(false);
  // The legends under the axes, two entries a row, not inside them: a study has an entry per arm
  // (8 in the paper in miniature), and inside the axes they cover the very lines and bands they name.
  for (QCustomPlot* p : {plot_, noise_plot_}) {
    p->axisRect()->insetLayout()->take(p->legend);
    p->plotLayout()->addElement(1, 0, p->legend);
    p->plotLayout()->setRowStretchFactor(1, 0.001);
    p->legend->setFillOrder(QCPLegend::foColumnsFirst);
    p->legend->setWrap(2);
  }
  runs_ = new QTableWidget(bottom);
  runs_->setObjectName(QStringLiteral("study.runs"));
  for (auto* t : {arms_, differences_, runs_}) {
    t->setEditTriggers(QAbstractItemView::NoEditTriggers);
    t->setSelectionBehavior(QAbstractItemView::SelectRows);
    t->verticalHeader()->setVisible(false);
  }
  bottom->setSizes({600, 400});  // scaled to the tab's width: the plot takes 60%
  split->setSizes({300, 180, 420});
  layout->addWidget(split, 1);

  timer_.setInterval(kRefreshMs);
  connect(&timer_, &QTimer::timeout, this, &StudyView::refresh);
  refresh();
}

StudyView::~StudyView() = default;

void StudyView::showEvent(QShowEvent* event) {
  QWidget::showEvent(event);
  timer_.start();
  refresh();
}

void StudyView::hideEvent(QHideEvent* event) {
  QWidget::hideEvent(event);
  timer_.stop();
}

void StudyView::refresh() {
  if (in_flight_) return;
  in_flight_ = true;
  const int64_t id = study_id_;
  store_->query<std::shared_ptr<StudySnapshot>>(
      this,
      [id](RunStore& s) {
        auto snap = std::make_shared<StudySnapshot>();
        const auto study = find_study(s, id);
        if (!study) throw std::runtime_error("there is no study " + std::to_string(id) + " in this workspace");
        snap->study = *study;
        snap->counts = study_counts(s, id);
        for (int64_t run : study_run_ids(s, id))
          if (auto row = s.run(run)) snap->runs.push_back(*row);
        snap->report = study_report(s, id);
        return snap;
      },
      [this](std::shared_ptr<StudySnapshot> snap) {
        in_flight_ = false;
        last_ = snap;
        showSnapshot(*snap);
      },
      [this](const QString& error) {
        in_flight_ = false;
        summary_->setText(tr("Cannot read study %1: %2").arg(study_id_).arg(error));
      });
}

void StudyView::showSnapshot(const StudySnapshot& snap) {
  const StudyCounts& c = snap.counts;
  summary_->setText(tr("<b>Study %1: %2</b> (%3). %4 runs: %5 completed, %6 running, %7 queued, %8 failed, %9 stopped")
                        .arg(snap.study.id)
                        .arg(QString::fromStdString(snap.study.name).toHtmlEscaped())
                        .arg(QString::fromLatin1(to_string(snap.study.state)))
                        .arg(c.total)
                        .arg(c.completed)
                        .arg(c.attached)
                        .arg(c.queued)
                        .arg(c.failed)
                        .arg(c.stopped) +
                    (c.blocked ? tr(", %1 blocked by a failed or stopped stage").arg(c.blocked) : QString()));
  // Startable work and nothing attached: no driver is at work on this study.
  // A driver this tab started is alive between its runs too: never start a second one.
  if (driver_pid_ > 0 && ::kill(static_cast<pid_t>(driver_pid_), 0) != 0) driver_pid_ = 0;
  run_queue_->setEnabled(driver_pid_ == 0 && snap.study.state == StudyState::active && c.attached == 0 &&
                         c.queued > c.blocked);
  pause_->setEnabled(snap.study.state == StudyState::active);
  // Also for stopped runs: resuming puts them back in the queue.
  resume_->setEnabled(snap.study.state != StudyState::active || c.stopped > 0);
  cancel_->setEnabled(snap.study.state != StudyState::cancelled);

  // The queue.
  runs_->setColumnCount(3);
  runs_->setHorizontalHeaderLabels({tr("Run"), tr("Status"), tr("Name")});
  runs_->setRowCount(static_cast<int>(snap.runs.size()));
  for (int r = 0; r < static_cast<int>(snap.runs.size()); ++r) {
    const RunRow& run = snap.runs[static_cast<size_t>(r)];
    runs_->setItem(r, 0, cell(QStringLiteral("#%1").arg(run.id), true));
    runs_->setItem(r, 1, cell(QString::fromLatin1(to_string(run.status))));
    runs_->setItem(r, 2, cell(QString::fromStdString(run.name)));
  }
  runs_->resizeColumnsToContents();

  // The arms.
  const auto cols = arm_columns(snap.report);
  QStringList headers{tr("Arm"), tr("Seeds")};
  for (const auto& k : cols) headers << column_title(k);
  arms_->setColumnCount(headers.size());
  arms_->setHorizontalHeaderLabels(headers);
  arms_->setRowCount(static_cast<int>(snap.report.arms.size()));
  arm_runs_.clear();
  for (int r = 0; r < static_cast<int>(snap.report.arms.size()); ++r) {
    const ArmResult& a = snap.report.arms[static_cast<size_t>(r)];
    arm_runs_.push_back(a.completed_run_ids);
    arms_->setItem(r, 0, cell(QString::fromStdString(a.arm)));
    arms_->setItem(r, 1, cell(QString::fromStdString(arm_seeds_text(a, snap.report.state)), true));
    for (size_t k = 0; k < cols.size(); ++k) {
      auto it = a.metrics.find(cols[k]);
      arms_->setItem(r, 2 + static_cast<int>(k), cell(it == a.metrics.end() ? QString() : interval_text(it->second), true));
    }
  }
  arms_->resizeColumnsToContents();

  // GANPO on against off: the headline differences and the head-to-head win rates.
  std::vector<QStringList> rows;
  std::vector<bool> called;
  for (const auto& p : snap.report.ganpo_vs_base) {
    for (const auto& [key, i] : p.differences) {
      if (!is_headline_metric(key)) continue;
      rows.push_back({QString::fromStdString(p.arm), QString::fromStdString(key), interval_text(i),
                      QString::fromStdString(verdict_text(i, /*head_to_head=*/false))});
      called.push_back(verdict_called(i, false));
    }
    for (const auto& [key, i] : p.win_rate_vs_baseline) {
      rows.push_back({QString::fromStdString(p.arm), QString::fromStdString(key), interval_text(i),
                      QString::fromStdString(verdict_text(i, /*head_to_head=*/true))});
      called.push_back(verdict_called(i, true));
    }
  }
  differences_->setColumnCount(4);
  differences_->setHorizontalHeaderLabels({tr("GANPO arm (against GANPO off)"), tr("Number"), tr("On minus off / head to head"), tr("Verdict")});
  differences_->setRowCount(static_cast<int>(rows.size()));
  for (int r = 0; r < static_cast<int>(rows.size()); ++r)
    for (int c2 = 0; c2 < 4; ++c2) {
      auto* item = cell(rows[static_cast<size_t>(r)][c2], c2 == 2);
      if (c2 == 3 && called[static_cast<size_t>(r)]) {
        QFont f = item->font();
        f.setBold(true);
        item->setFont(f);
      }
      differences_->setItem(r, c2, item);
    }
  differences_->resizeColumnsToContents();
  const QString note = QString::fromStdString(multiplicity_note(count_verdicts(snap.report, /*headline_only=*/true)));
  multiplicity_->setText(note);
  multiplicity_->setVisible(!note.isEmpty());

  // Win rate against temperature per arm, with its 95% band.
  plot_->clearGraphs();
  double lo = 1, hi = 0, t0 = 1e9, t1 = -1e9;
  for (size_t a = 0; a < snap.report.arms.size(); ++a) {
    const ArmResult& arm = snap.report.arms[a];
    QVector<double> t, mean, low, high;
    std::vector<std::pair<double, const Interval*>> points;
    for (const auto& [key, i] : arm.metrics)
      if (key.rfind("judge/win_rate@", 0) == 0 && key.find('/', 6) == std::string::npos)
        if (auto temp = read_number(key.substr(15))) points.emplace_back(*temp, &i);
    if (points.empty()) continue;
    std::sort(points.begin(), points.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    for (const auto& [temp, i] : points) {
      t << temp, mean << i->mean, low << i->low, high << i->high;
      lo = std::min(lo, i->low), hi = std::max(hi, i->high), t0 = std::min(t0, temp), t1 = std::max(t1, temp);
    }
    const QColor colour = run_color(static_cast<int64_t>(a) + 1);
    QColor faint = colour;
    faint.setAlpha(45);
    auto* lower = plot_->addGraph();
    lower->setPen(Qt::NoPen);
    lower->setData(t, low, true);
    lower->removeFromLegend();
    auto* upper = plot_->addGraph();
    upper->setPen(Qt::NoPen);
    upper->setBrush(faint);
    upper->setChannelFillGraph(lower);
    upper->setData(t, high, true);
    upper->removeFromLegend();
    auto* line = plot_->addGraph();
    line->setPen(QPen(colour, 2));
    line->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, 5));
    line->setName(short_arm(arm));
    line->setData(t, mean, true);
  }
  if (t1 >= t0) {
    plot_->xAxis->setRange(t0 - 0.05, t1 + 0.05);
    plot_->yAxis->setRange(std::min(lo, 0.5) - 0.05, std::max(hi, 0.5) + 0.05);
  }
  plot_->replot(QCustomPlot::rpQueuedReplot);
  drawNoisePlot(snap.report);
  drawTimePlot(snap.report);

  const bool first = !loaded_;
  loaded_ = true;
  if (first) Q_EMIT loaded();
}

void StudyView::setState(const char* state, std::function<void()> then) {
  const int64_t id = study_id_;
  const std::string s = state;
  store_->query<bool>(
      this,
      [id, s](RunStore& store) {
        set_study_state(store, id, s == "paused" ? StudyState::paused : s == "active" ? StudyState::active : StudyState::cancelled);
        return true;
      },
      [this, then = std::move(then)](bool) {
        if (then) then();
        refresh();
      });
}

// Held-out accuracy against data.label_noise, one line per arm without its noise value, with the
// 95% interval as error bars.
void StudyView::drawNoisePlot(const StudyReport& report) {
  noise_plot_->clearPlottables();
  std::map<QString, std::vector<std::pair<double, Interval>>> lines;
  for (const ArmResult& arm : report.arms) {
    auto it = arm.metrics.find("eval_rewards/accuracies");
    if (it == arm.metrics.end()) continue;
    std::optional<double> noise;  // only arms the grid gives a noise value (as the HTML report)
    QStringList rest;
    for (const auto& [key, value] : arm.values) {
      if (key == "data.label_noise")
        noise = read_number(value);
      else
        rest << QString::fromStdString(key.substr(key.rfind('.') + 1) + "=" + value);
    }
    if (!noise) continue;
    lines[rest.isEmpty() ? tr("all arms") : rest.join(QStringLiteral(", "))].emplace_back(*noise, it->second);
  }
  double lo = 1, hi = 0, x0 = 1e9, x1 = -1e9;
  int n = 0;
  for (auto& [label, points] : lines) {
    std::sort(points.begin(), points.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    QVector<double> x, y, err_low, err_high;
    for (const auto& [noise, i] : points) {
      x << noise, y << i.mean, err_low << i.mean - i.low, err_high << i.high - i.mean;
      lo = std::min(lo, i.low), hi = std::max(hi, i.high), x0 = std::min(x0, noise), x1 = std::max(x1, noise);
    }
    auto* line = noise_plot_->addGraph();
    line->setPen(QPen(run_color(++n), 2));
    line->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, 5));
    line->setName(label);
    line->setData(x, y, true);
    auto* bars = new QCPErrorBars(noise_plot_->xAxis, noise_plot_->yAxis);
    bars->removeFromLegend();
    bars->setDataPlottable(line);
    bars->setData(err_low, err_high);
    bars->setPen(QPen(run_color(n), 1));
  }
  if (x1 >= x0) {
    noise_plot_->xAxis->setRange(x0 - 0.05, x1 + 0.05);
    noise_plot_->yAxis->setRange(lo - 0.05, hi + 0.05);
  }
  noise_plot_->replot(QCustomPlot::rpQueuedReplot);
}

// Mean step time per arm (the overhead of GANPO's critics against its base), 95% error bars.
void StudyView::drawTimePlot(const StudyReport& report) {
  time_plot_->clearPlottables();
  QVector<double> x, y, err_low, err_high;
  QVector<QString> labels;
  double hi = 0;
  for (const ArmResult& arm : report.arms) {
    auto it = arm.metrics.find("step_time_s");
    if (it == arm.metrics.end()) continue;
    x << x.size() + 1, y << it->second.mean;
    err_low << it->second.mean - it->second.low, err_high << it->second.high - it->second.mean;
    labels << short_arm(arm).replace(QStringLiteral(", "), QStringLiteral("\n"));
    hi = std::max(hi, it->second.high);
  }
  if (x.isEmpty()) {
    time_plot_->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  auto* bars = new QCPBars(time_plot_->xAxis, time_plot_->yAxis);
  bars->setData(x, y, true);
  bars->setWidth(0.6);
  bars->setBrush(run_color(1).lighter(140));
  bars->setPen(QPen(run_color(1)));
  auto* errors = new QCPErrorBars(time_plot_->xAxis, time_plot_->yAxis);
  errors->setDataPlottable(bars);
  errors->setData(err_low, err_high);
  QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
  ticker->addTicks(x, labels);
  time_plot_->xAxis->setTicker(ticker);
  time_plot_->xAxis->setRange(0.4, x.size() + 0.6);
  time_plot_->yAxis->setRange(0, hi * 1.15 + 1e-9);
  time_plot_->replot(QCustomPlot::rpQueuedReplot);
}

bool StudyView::runQueue(QString* why) {
  WorkerLauncher launcher(store_->db_path());
  launcher.setWorkerProgram(worker_program_);
  QString error;
  qint64 pid = 0;
  if (!launcher.startStudyDriver(study_id_, /*jobs=auto*/ 0, &error, &pid)) {
    if (why) *why = tr("Cannot run the queue: %1.").arg(error);
    return false;
  }
  driver_pid_ = pid;
  run_queue_->setEnabled(false);
  summary_->setText(summary_->text() + tr(" — queue driver started (pid %1)").arg(pid));
  return true;
}

QStringList StudyView::existingExportFiles(const QString& folder) const {
  QStringList names;
  for (const char* suffix : {".html", ".csv", ".json"}) {
    const QString name = QStringLiteral("study-%1%2").arg(study_id_).arg(QLatin1String(suffix));
    if (QFileInfo::exists(QDir(folder).filePath(name))) names << name;
  }
  return names;
}

bool StudyView::exportReport(const QString& folder, QString* why) {
  if (!last_) {
    if (why) *why = tr("The study has not been read yet.");
    return false;
  }
  QDir().mkpath(folder);
  const QString base = QDir(folder).filePath(QStringLiteral("study-%1").arg(study_id_));
  // Rendered only when asked: the tab re-reads the report every few seconds.
  const StudyReport& report = last_->report;
  for (const auto& [suffix, text] :
       {std::pair{QStringLiteral(".html"), QString::fromStdString(study_report_html(report))},
        std::pair{QStringLiteral(".csv"), QString::fromStdString(study_report_csv(report))},
        std::pair{QStringLiteral(".json"), QString::fromStdString(report_to_json(report).dump(2, ' ', false, nlohmann::json::error_handler_t::replace))}}) {
    QSaveFile file(base + suffix);
    if (!file.open(QIODevice::WriteOnly) || file.write(text.toUtf8()) < 0 || !file.commit()) {
      if (why) *why = tr("Cannot write %1: %2").arg(file.fileName(), file.errorString());
      return false;
    }
  }
  return true;
}

}  // namespace ganpo::ui
