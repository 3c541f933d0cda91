#include "ui/checkpoints_view.h"

#include <QCheckBox>
#include <QComboBox>
#include <QCoreApplication>
#include <QDateTime>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDir>
#include <QDoubleSpinBox>
#include <QFileInfo>
#include <QFormLayout>
#include <QFrame>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QItemSelectionModel>
#include <QLabel>
#include <QLineEdit>
#include <QMessageBox>
#include <QProcess>
#include <QProgressBar>
#include <QPushButton>
#include <QScrollArea>
#include <QSpinBox>
#include <QSplitter>
#include <QTabWidget>
#include <QTableWidget>
#include <QTimer>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>
#include <functional>

#include <nlohmann/json.hpp>

#include "core/atomic_folder.h"
#include "core/config.h"
#include "core/eval/eval_report.h"
#include "db/run_service.h"
#include "ui/store_worker.h"

#if __has_include("ui/word_diff.h")
#include "ui/word_diff.h"
#define GANPO_HAVE_WORD_DIFF 1
#endif

namespace ganpo::ui {
namespace {

constexpr int kPathRole = Qt::UserRole + 1;
constexpr int kStepRole = Qt::UserRole + 2;  // -1 for the reference row

nlohmann::json parse_or_null(const std::string& text) {
  if (text.empty()) return nullptr;
  try {
    return nlohmann::json::parse(text);
  } catch (const std::exception&) {
    return nullptr;
  }
}

std::string string_at(const nlohmann::json& j, const char* section, const char* key) {
  if (!j.is_object() || !j.contains(section) || !j[section].is_object()) return {};
  const auto& s = j[section];
  if (!s.contains(key) || !s[key].is_string()) return {};
  return s[key].get<std::string>();
}

double number_at(const nlohmann::json& j, const char* section, const char* key, double otherwise) {
  if (!j.is_object() || !j.contains(section) || !j[section].is_object()) return otherwise;
  const auto& s = j[section];
  if (!s.contains(key) || !s[key].is_number()) return otherwise;
  return s[key].get<double>();
}

bool true_at(const nlohmann::json& j, const char* section, const char* key) {
  if (!j.is_object() || !j.contains(section) || !j[section].is_object()) return false;
  const auto& s = j[section];
  return s.contains(key) && s[key].is_boolean() && s[key].get<bool>();
}

// Numeric fields of a checkpoint's metrics (a flat {"key": number} object).
void collect_metrics(const nlohmann::json& j, std::map<QString, double>& out) {
  if (!j.is_object()) return;
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.value().is_number()) out[QString::fromStdString(it.key())] = it.value().get<double>();
}

// An evaluation's held-out numbers and its overall win rates as "win@<temperature>".
void collect_report(const EvalReport& report, std::map<QString, double>& out) {
  for (const auto& [key, value] : report.preference) out[QString::fromStdString(key)] = value;
  if (!report.judge) return;
  for (const JudgeSummaryRow& row : report.judge->rows)
    if (row.bucket == "all") out[QStringLiteral("win@") + QString::fromStdString(temperature_label(row.temperature))] = row.win_rate;
}

QString pretty_key(const QString& key) {
  if (key == QLatin1String("eval_rewards/accuracies")) return QStringLiteral("pref. accuracy");
  if (key == QLatin1String("eval_rewards/margins")) return QStringLiteral("margin");
  if (key == QLatin1String("eval_loss")) return QStringLiteral("eval loss");
  if (key.startsWith(QLatin1String("win@"))) return QStringLiteral("win rate @") + key.mid(4);
  QString k = key;
  if (k.startsWith(QLatin1String("eval_"))) k = k.mid(5);
  return k;
}

int key_rank(const QString& key) {
  if (key == QLatin1String("eval_rewards/accuracies")) return 0;
  if (key == QLatin1String("eval_rewards/margins")) return 1;
  if (key == QLatin1String("eval_loss")) return 2;
  if (key.startsWith(QLatin1String("win@"))) return 3;
  return 4;
}

QString html_text(const QString& s) {
  return s.toHtmlEscaped().replace(QLatin1Char('\n'), QStringLiteral("<br>"));
}

QString format_time(double unix_seconds) {
  if (unix_seconds <= 0) return {};
  return QDateTime::fromMSecsSinceEpoch(static_cast<qint64>(unix_seconds * 1000)).toString(QStringLiteral("MMM d HH:mm:ss"));
}

QTableWidgetItem* cell(const QString& text, Qt::Alignment align = Qt::AlignLeft | Qt::AlignVCenter) {
  auto* item = new QTableWidgetItem(text);
  item->setFlags(Qt::ItemIsEnabled | Qt::ItemIsSelectable);
  item->setTextAlignment(align);
  return item;
}

// A live output cell's text (defined with the output grid below).
QString streaming_html(const QString& text, bool sampling);

// A checkpoint's name in the table and over its output column: "step N", and the folder's name
// where it is not checkpoint-N (a run's final folder shares its step with the last checkpoint).
QString checkpoint_label(int64_t step, const QString& path) {
  const QString folder = QFileInfo(path).fileName();
  const QString label = QCoreApplication::translate("ganpo::ui::CheckpointsView", "step %1").arg(step);
  return folder == QStringLiteral("checkpoint-%1").arg(step) || folder.isEmpty() ? label
                                                                                  : QStringLiteral("%1 (%2)").arg(label, folder);
}

QString number(double v) {
  if (!std::isfinite(v)) return QStringLiteral("–");
  return QString::number(v, 'f', std::fabs(v) >= 100 ? 1 : 3);
}

}  // namespace

CheckpointsView::CheckpointsView(StoreWorker* store, int64_t run_id, QString worker_program, QWidget* parent)
    : QWidget(parent), store_(store), run_id_(run_id), worker_program_(std::move(worker_program)) {
  service_ = new GenerationService(this);
  poll_ = new QTimer(this);
  poll_->setInterval(2000);
  connect(poll_, &QTimer::timeout, this, &CheckpointsView::refresh);

  auto* outer = new QVBoxLayout(this);
  outer->setContentsMargins(6, 6, 6, 6);
  auto* splitter = new QSplitter(Qt::Vertical, this);
  outer->addWidget(splitter);

  // ---- checkpoints
  auto* top = new QWidget(splitter);
  auto* top_layout = new QVBoxLayout(top);
  top_layout->setContentsMargins(0, 0, 0, 0);
  auto* hint = new QLabel(tr("Click rows to pick the models to compare (two or more); click again to unpick."), top);
  hint->setStyleSheet(QStringLiteral("color: palette(mid);"));
  top_layout->addWidget(hint);
  table_ = new QTableWidget(top);
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->setSelectionMode(QAbstractItemView::MultiSelection);
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->verticalHeader()->setVisible(false);
  table_->setAlternatingRowColors(true);
  table_->horizontalHeader()->setStretchLastSection(true);
  top_layout->addWidget(table_);
  auto* row_buttons = new QHBoxLayout;
  evaluate_ = new QPushButton(tr("Evaluate…"), top);
  evaluate_->setToolTip(tr("Preference accuracy and judge win rates (built-in task) of each picked checkpoint "
                           "against the reference, in the background"));
  clone_ = new QPushButton(tr("Clone from this checkpoint…"), top);
  clone_->setToolTip(tr("Start a new run from the current checkpoint row"));
  row_buttons->addWidget(evaluate_);
  row_buttons->addWidget(clone_);
  row_buttons->addStretch(1);
  top_layout->addLayout(row_buttons);
  connect(evaluate_, &QPushButton::clicked, this, &CheckpointsView::onEvaluateClicked);
  connect(clone_, &QPushButton::clicked, this, &CheckpointsView::onCloneClicked);
  connect(table_->selectionModel(), &QItemSelectionModel::selectionChanged, this, &CheckpointsView::updateButtons);
  connect(table_, &QTableWidget::currentCellChanged, this, &CheckpointsView::updateButtons);

  // ---- generation controls
  auto* bottom = new QWidget(splitter);
  auto* bottom_layout = new QVBoxLayout(bottom);
  bottom_layout->setContentsMargins(0, 0, 0, 0);
  auto* prompt_row = new QHBoxLayout;
  prompt_row->addWidget(new QLabel(tr("Prompt:"), bottom));
  prompt_ = new QComboBox(bottom);
  prompt_->setEditable(true);
  prompt_->setInsertPolicy(QComboBox::NoInsert);
  prompt_->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
  prompt_->setMinimumContentsLength(30);
  prompt_->lineEdit()->setPlaceholderText(tr("Type a prompt or choose one of the run's sample prompts"));
  prompt_row->addWidget(prompt_, 1);
  bottom_layout->addLayout(prompt_row);

  auto* controls = new QHBoxLayout;
  temperature_ = new QDoubleSpinBox(bottom);
  temperature_->setRange(0.0, 5.0);
  temperature_->setSingleStep(0.1);
  temperature_->setValue(0.7);
  temperature_->setToolTip(tr("0 = greedy"));
  top_p_ = new QDoubleSpinBox(bottom);
  top_p_->setRange(0.05, 1.0);
  top_p_->setSingleStep(0.05);
  top_p_->setValue(1.0);
  max_new_tokens_ = new QSpinBox(bottom);
  max_new_tokens_->setRange(1, 4096);
  max_new_tokens_->setValue(96);
  seed_ = new QSpinBox(bottom);
  seed_->setRange(0, 2147483647);
  seed_->setValue(0);
  grid_ = new QCheckBox(tr("Grid: all sample prompts"), bottom);
  grid_->setToolTip(tr("Generate the run's fixed sample-prompt set with every picked model"));
  chat_template_ = new QCheckBox(tr("Chat template"), bottom);
  chat_template_->setChecked(true);
  chat_template_->setToolTip(tr("Give each model the prompt as a user turn in its own chat template (from its "
                                "tokenizer_config.json), as chat models expect. Models without one get the plain "
                                "prompt; a prompt already in the template's format is sent as it is."));
  generate_ = new QPushButton(tr("Generate"), bottom);
  generate_->setDefault(true);
  cancel_ = new QPushButton(tr("Cancel"), bottom);
  cancel_->setEnabled(false);
  progress_ = new QProgressBar(bottom);
  progress_->setRange(0, 1);
  progress_->setValue(0);
  progress_->setTextVisible(false);
  progress_->setMaximumWidth(160);
  // Shown while generating, its room kept meanwhile: showing it widened the controls' row past
  // the window's share for the tab, so Generate pushed the run list narrower and it came back
  // when the request ended.
  QSizePolicy keep_room = progress_->sizePolicy();
  keep_room.setRetainSizeWhenHidden(true);
  progress_->setSizePolicy(keep_room);
  progress_->setVisible(false);
  controls->addWidget(new QLabel(tr("Temperature"), bottom));
  controls->addWidget(temperature_);
  controls->addWidget(new QLabel(tr("Top-p"), bottom));
  controls->addWidget(top_p_);
  controls->addWidget(new QLabel(tr("Max new tokens"), bottom));
  controls->addWidget(max_new_tokens_);
  controls->addWidget(new QLabel(tr("Seed"), bottom));
  controls->addWidget(seed_);
  controls->addWidget(grid_);
  controls->addWidget(chat_template_);
  controls->addStretch(1);
  controls->addWidget(progress_);
  controls->addWidget(generate_);
  controls->addWidget(cancel_);
  bottom_layout->addLayout(controls);
  status_ = new QLabel(bottom);
  status_->setWordWrap(true);
  status_->setTextFormat(Qt::PlainText);  // (errors quote judges' and loaders' text, which may hold "<")
  status_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  bottom_layout->addWidget(status_);
  connect(generate_, &QPushButton::clicked, this, &CheckpointsView::onGenerateClicked);
  connect(cancel_, &QPushButton::clicked, this, &CheckpointsView::cancelGeneration);
  connect(grid_, &QCheckBox::toggled, prompt_, [this](bool on) { prompt_->setEnabled(!on); });

  // ---- results
  results_tabs_ = new QTabWidget(bottom);
  outputs_area_ = new QScrollArea(results_tabs_);
  outputs_area_->setWidgetResizable(true);
  auto* empty = new QLabel(tr("Pick two or more models above, choose a prompt and press Generate."));
  empty->setAlignment(Qt::AlignCenter);
  outputs_area_->setWidget(empty);
  results_tabs_->addTab(outputs_area_, tr("Outputs"));
  eval_table_ = new QTableWidget(results_tabs_);
  eval_table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  eval_table_->verticalHeader()->setVisible(false);
  eval_table_->setAlternatingRowColors(true);
  eval_table_->horizontalHeader()->setStretchLastSection(true);
  results_tabs_->addTab(eval_table_, tr("Evaluations"));
  bottom_layout->addWidget(results_tabs_, 1);
  splitter->setStretchFactor(0, 2);
  splitter->setStretchFactor(1, 5);

  connect(service_, &GenerationService::progress, this, [this](int done, int total) {
    progress_->setRange(0, std::max(1, total));
    progress_->setValue(done);
  });
  connect(service_, &GenerationService::finished, this, &CheckpointsView::onOutputs);
  connect(service_, &GenerationService::textStreamed, this, &CheckpointsView::onTextStreamed);
  connect(service_, &GenerationService::failed, this, [this](const QString& message) {
    generate_->setEnabled(true);
    cancel_->setEnabled(false);
    progress_->setVisible(false);
    // The columns keep what streamed before the failure, without the "still sampling" mark.
    for (auto& [key, cell] : live_cells_) cell->setText(streaming_html(live_texts_[key], false));
    live_cells_.clear();
    setStatus(tr("Generation failed: %1").arg(message));
    Q_EMIT generationFinished();
  });

  updateButtons();
  refresh();
}

CheckpointsView::~CheckpointsView() {
  if (eval_process_) {
    eval_process_->disconnect(this);
    eval_process_->kill();
    eval_process_->waitForFinished(2000);
  }
}

void CheckpointsView::setLive(bool live) {
  polling_ = live;
  if (live)
    poll_->start();
  else
    poll_->stop();
  refresh();
}

void CheckpointsView::refresh() {
  const int64_t id = run_id_;
  const bool want_prompts = sample_prompts_.isEmpty();
  store_->query<Snapshot>(
      this,
      [id, want_prompts](RunStore& s) {
        Snapshot snap;
        snap.run = s.run(id);
        snap.checkpoints = s.checkpoints(id);
        // Only folders that were written completely (and still are) can be loaded or evaluated.
        snap.checkpoints.erase(std::remove_if(snap.checkpoints.begin(), snap.checkpoints.end(),
                                              [](const CheckpointRow& c) { return !incomplete_reason(c.path).empty(); }),
                               snap.checkpoints.end());
        snap.evals = s.evals(id);
        if (want_prompts) {
          const auto steps = s.sample_steps(id);
          if (!steps.empty()) {
            auto rows = s.samples(id, steps.front());
            std::sort(rows.begin(), rows.end(),
                      [](const SampleRow& a, const SampleRow& b) { return a.prompt_index < b.prompt_index; });
            // A step sampled twice (Sample now at a scheduled step) holds each prompt twice: once each,
            // so grid row k is prompt number k, as the Samples tab shows them.
            for (size_t i = 0; i < rows.size(); ++i)
              if (i == 0 || rows[i].prompt_index != rows[i - 1].prompt_index) snap.sample_prompts.push_back(rows[i].prompt);
          }
        }
        return snap;
      },
      [this](Snapshot snap) { onSnapshot(std::move(snap)); },
      [this](const QString& error) { setStatus(tr("Cannot read the run's checkpoints: %1").arg(error)); });
}

void CheckpointsView::onSnapshot(Snapshot s) {
  bool changed = !loaded_once_;
  if (s.run) {
    const QString cfg = QString::fromStdString(s.run->config_json);
    if (cfg != config_json_) {
      config_json_ = cfg;
      const auto j = parse_or_null(s.run->config_json);
      QString ref = QString::fromStdString(string_at(j, "model", "reference"));
      reference_source_ = QStringLiteral("model.reference");
      // A model folder of random weights (model.random_weights) is no reference to load.
      if (ref.isEmpty() && !true_at(j, "model", "random_weights")) {
        ref = QString::fromStdString(string_at(j, "model", "checkpoint"));
        reference_source_ = QStringLiteral("model.checkpoint");
      }
      if (ref.isEmpty()) reference_source_.clear();
      DataConfig data;
      data.builtin = string_at(j, "data", "builtin");
      data.train = string_at(j, "data", "train");
      has_held_out_pairs_ = uses_builtin_task(data) || !string_at(j, "data", "eval").empty();
      task_name_ = QString::fromStdString(builtin_task_name(data));
      judge_command_ = QString::fromStdString(string_at(j, "eval", "judge_command"));
      has_judge_command_ = !judge_command_.isEmpty();
      judge_timeout_s_ = number_at(j, "eval", "judge_timeout_s", EvalConfig{}.judge_timeout_s);
      if (ref != reference_path_) {
        reference_path_ = ref;
        changed = true;
      }
    }
  }
  if (s.checkpoints.size() != checkpoints_.size() ||
      (!s.checkpoints.empty() && s.checkpoints.back().id != checkpoints_.back().id)) {
    checkpoints_ = std::move(s.checkpoints);
    std::sort(checkpoints_.begin(), checkpoints_.end(),
              [](const CheckpointRow& a, const CheckpointRow& b) { return a.step < b.step; });
    changed = true;
  }
  // By row ids, not their count: a resumed run that redoes a step's evaluation replaces its row.
  const bool evals_changed = !std::equal(s.evals.begin(), s.evals.end(), evals_.begin(), evals_.end(),
                                         [](const EvalRow& a, const EvalRow& b) { return a.id == b.id; });
  if (evals_changed) {
    evals_ = std::move(s.evals);
    changed = true;
  }
  if (!s.sample_prompts.empty() && sample_prompts_.isEmpty()) {
    for (const auto& p : s.sample_prompts) sample_prompts_ << QString::fromStdString(p);
    const QString typed = prompt_->currentText();
    prompt_->clear();
    prompt_->addItems(sample_prompts_);
    if (!typed.isEmpty())
      prompt_->setEditText(typed);
    else
      prompt_->setCurrentIndex(0);
  }
  if (changed) rebuildTable();
  if (evals_changed || !loaded_once_) rebuildEvalTable();
  const bool first = !loaded_once_;
  loaded_once_ = true;
  if (first) Q_EMIT loaded();
}

void CheckpointsView::rebuildTable() {
  const QStringList picked = pickedFolders();
  const int current_row = table_->currentRow();
  const QString current_path =
      current_row >= 0 && table_->item(current_row, 0) ? table_->item(current_row, 0)->data(kPathRole).toString() : QString();
  // Metrics per step: those saved with the checkpoint, then evaluations (newest wins).
  std::map<int64_t, std::map<QString, double>> by_step;
  for (const auto& c : checkpoints_) collect_metrics(parse_or_null(c.metrics_json), by_step[c.step]);
  std::vector<const EvalRow*> evals;
  for (const auto& e : evals_) evals.push_back(&e);
  std::sort(evals.begin(), evals.end(), [](auto* a, auto* b) { return a->id < b->id; });
  for (const auto* e : evals) collect_report(eval_report_from_text(e->result_json), by_step[e->checkpoint_step]);
  std::set<QString> keys;
  for (const auto& c : checkpoints_)
    for (const auto& [k, v] : by_step[c.step]) keys.insert(k);
  std::vector<QString> columns(keys.begin(), keys.end());
  std::stable_sort(columns.begin(), columns.end(), [](const QString& a, const QString& b) {
    return key_rank(a) != key_rank(b) ? key_rank(a) < key_rank(b) : a < b;
  });

  QSignalBlocker block(table_->selectionModel());
  table_->clear();
  QStringList headers{tr("Model"), tr("Step"), tr("Saved")};
  for (const auto& k : columns) headers << pretty_key(k);
  headers << tr("Folder");
  table_->setColumnCount(headers.size());
  table_->setHorizontalHeaderLabels(headers);
  const bool has_ref = !reference_path_.isEmpty();
  table_->setRowCount(static_cast<int>(checkpoints_.size()) + (has_ref ? 1 : 0));
  int row = 0;
  auto add_row = [&](const QString& name, int64_t step, const QString& when, const QString& path,
                     const std::map<QString, double>* metrics) {
    auto* first = cell(name);
    first->setData(kPathRole, path);
    first->setData(kStepRole, static_cast<qlonglong>(step));
    table_->setItem(row, 0, first);
    table_->setItem(row, 1, cell(step >= 0 ? QString::number(step) : QString(), Qt::AlignRight | Qt::AlignVCenter));
    table_->setItem(row, 2, cell(when));
    for (int c = 0; c < static_cast<int>(columns.size()); ++c) {
      QString text;
      if (metrics) {
        auto it = metrics->find(columns[static_cast<size_t>(c)]);
        if (it != metrics->end()) text = number(it->second);
      }
      table_->setItem(row, 3 + c, cell(text, Qt::AlignRight | Qt::AlignVCenter));
    }
    auto* folder = cell(path);
    folder->setToolTip(path);
    table_->setItem(row, 3 + static_cast<int>(columns.size()), folder);
    ++row;
  };
  if (has_ref) {
    add_row(tr("reference"), -1, QString(), reference_path_, nullptr);
    table_->item(0, 0)->setToolTip(tr("The run's reference model (%1)").arg(reference_source_));
    QFont f = table_->item(0, 0)->font();
    f.setItalic(true);
    table_->item(0, 0)->setFont(f);
  }
  for (const auto& c : checkpoints_)
    add_row(QFileInfo(QString::fromStdString(c.path)).fileName() == QLatin1String("final") ? tr("final") : tr("checkpoint"),
            c.step, format_time(c.created_at), QString::fromStdString(c.path), &by_step[c.step]);
  table_->horizontalHeader()->setSectionResizeMode(QHeaderView::Interactive);
  table_->resizeColumnsToContents();
  table_->horizontalHeader()->setSectionResizeMode(table_->columnCount() - 1, QHeaderView::Stretch);
  for (int r = 0; r < table_->rowCount(); ++r) {
    const QString path = table_->item(r, 0)->data(kPathRole).toString();
    if (picked.contains(path)) table_->selectRow(r);
    if (!current_path.isEmpty() && path == current_path) table_->setCurrentCell(r, 0, QItemSelectionModel::NoUpdate);
  }
  if (table_->rowCount() == 0 && loaded_once_)
    setStatus(tr("This run has no checkpoints yet; they appear here as the run saves them."));
  updateButtons();
}

void CheckpointsView::rebuildEvalTable() {
  // One row per (evaluation, temperature) of the judge report, or one per evaluation without it.
  const QStringList headers{tr("Step"), tr("Time"), tr("Pref. accuracy"), tr("Margin"), tr("Temperature"),
                            tr("Win rate"), tr("Short"), tr("Medium"), tr("Long"), tr("Policy score"),
                            tr("Reference score"), tr("Policy length")};
  eval_table_->clear();
  eval_table_->setColumnCount(headers.size());
  eval_table_->setHorizontalHeaderLabels(headers);
  std::vector<QStringList> rows;
  std::vector<const EvalRow*> evals;
  for (const auto& e : evals_) evals.push_back(&e);
  std::sort(evals.begin(), evals.end(), [](auto* a, auto* b) {
    return a->checkpoint_step != b->checkpoint_step ? a->checkpoint_step < b->checkpoint_step : a->id < b->id;
  });
  for (const auto* e : evals) {
    const EvalReport report = eval_report_from_text(e->result_json);
    auto held_out = [&](const char* k) {
      auto it = report.preference.find(k);
      return it == report.preference.end() ? QString() : number(it->second);
    };
    const QString acc = held_out("eval_rewards/accuracies"), margin = held_out("eval_rewards/margins");
    std::map<double, std::map<std::string, const JudgeSummaryRow*>> by_temp;
    if (report.judge)
      for (const auto& r : report.judge->rows) by_temp[r.temperature][r.bucket] = &r;
    if (by_temp.empty()) {
      if (report.preference.empty()) continue;
      rows.push_back({QString::number(e->checkpoint_step), format_time(e->created_at), acc, margin, {}, {}, {}, {},
                      {}, {}, {}, {}});
      continue;
    }
    for (const auto& [t, buckets] : by_temp) {
      auto win = [&, &buckets = buckets](const char* b) {
        auto it = buckets.find(b);
        return it == buckets.end() ? QString() : number(it->second->win_rate);
      };
      const JudgeSummaryRow* all = buckets.count("all") ? buckets.at("all") : nullptr;
      rows.push_back({QString::number(e->checkpoint_step), format_time(e->created_at), acc, margin,
                      QString::number(t, 'f', 1), win("all"), win("short"), win("medium"), win("long"),
                      all ? number(all->policy_score) : QString(), all ? number(all->reference_score) : QString(),
                      all && all->policy_length >= 0 ? QString::number(all->policy_length, 'f', 1) : QString()});
    }
  }
  eval_table_->setRowCount(static_cast<int>(rows.size()));
  for (int r = 0; r < static_cast<int>(rows.size()); ++r)
    for (int c = 0; c < headers.size(); ++c)
      eval_table_->setItem(r, c, cell(rows[static_cast<size_t>(r)][c], c == 1 ? Qt::AlignLeft | Qt::AlignVCenter
                                                                            : Qt::AlignRight | Qt::AlignVCenter));
  eval_table_->resizeColumnsToContents();
}

QStringList CheckpointsView::pickedFolders() const {
  QStringList out;
  std::vector<int> rows;
  for (const auto& idx : table_->selectionModel()->selectedRows()) rows.push_back(idx.row());
  std::sort(rows.begin(), rows.end());
  for (int r : rows)
    if (auto* item = table_->item(r, 0)) out << item->data(kPathRole).toString();
  return out;
}

void CheckpointsView::pickFolders(const QStringList& dirs) {
  table_->clearSelection();
  for (int r = 0; r < table_->rowCount(); ++r)
    if (dirs.contains(table_->item(r, 0)->data(kPathRole).toString())) table_->selectRow(r);
  updateButtons();
}

void CheckpointsView::setPrompt(const QString& prompt) {
  grid_->setChecked(false);
  prompt_->setEditText(prompt);
}

void CheckpointsView::setSampling(double temperature, double top_p, int max_new_tokens, quint64 seed) {
  temperature_->setValue(temperature);
  top_p_->setValue(top_p);
  max_new_tokens_->setValue(max_new_tokens);
  seed_->setValue(static_cast<int>(seed));
}

void CheckpointsView::setGridMode(bool grid) { grid_->setChecked(grid); }

void CheckpointsView::setChatTemplate(bool on) { chat_template_->setChecked(on); }

QString CheckpointsView::statusText() const { return status_->text(); }

void CheckpointsView::setStatus(const QString& text) { status_->setText(text); }

std::optional<int64_t> CheckpointsView::currentCheckpointStep(QString* path) const {
  const int r = table_->currentRow();
  if (r < 0 || !table_->item(r, 0)) return std::nullopt;
  const auto step = table_->item(r, 0)->data(kStepRole).toLongLong();
  if (step < 0) return std::nullopt;
  if (path) *path = table_->item(r, 0)->data(kPathRole).toString();
  return step;
}

void CheckpointsView::updateButtons() {
  const QStringList picked = pickedFolders();
  const bool busy = service_->isBusy();
  generate_->setEnabled(!busy && !picked.isEmpty());
  generate_->setToolTip(picked.size() >= 2 ? tr("Generate with the %1 picked models").arg(picked.size())
                                           : tr("Pick two or more rows to compare (one works too)"));
  int picked_checkpoints = 0;
  for (const auto& idx : table_->selectionModel()->selectedRows())
    if (auto* it = table_->item(idx.row(), 0); it && it->data(kStepRole).toLongLong() >= 0) ++picked_checkpoints;
  evaluate_->setEnabled(picked_checkpoints > 0 && !reference_path_.isEmpty() && !isEvaluating());
  if (reference_path_.isEmpty())
    evaluate_->setToolTip(tr("This run has no reference model folder (model.reference, or a model.checkpoint with "
                             "weights; a fresh or random-weights model's initial weights are not kept), so there "
                             "is nothing to evaluate against"));
  QString path;
  const auto step = currentCheckpointStep(&path);
  clone_->setEnabled(step.has_value());
  clone_->setText(step ? tr("Clone from step %1…").arg(*step) : tr("Clone from this checkpoint…"));
}

void CheckpointsView::onCloneClicked() {
  QString path;
  if (auto step = currentCheckpointStep(&path)) Q_EMIT cloneFromCheckpoint(run_id_, *step, path);
}

// ---- generation ----------------------------------------------------------------------------

bool CheckpointsView::generateNow() {
  if (service_->isBusy()) return false;
  GenerationRequest req;
  for (int r = 0; r < table_->rowCount(); ++r) {
    if (!table_->selectionModel()->isRowSelected(r, {})) continue;
    auto* item = table_->item(r, 0);
    req.model_dirs << item->data(kPathRole).toString();
    const auto step = item->data(kStepRole).toLongLong();
    req.labels << (step < 0 ? tr("reference") : checkpoint_label(step, req.model_dirs.back()));
  }
  if (req.model_dirs.isEmpty()) {
    setStatus(tr("Pick the models to compare in the table first."));
    return false;
  }
  if (grid_->isChecked()) {
    req.prompts = sample_prompts_;
    if (req.prompts.isEmpty()) {
      setStatus(tr("This run has no sample prompts yet; type a prompt instead."));
      return false;
    }
  } else {
    const QString p = prompt_->currentText();
    if (p.trimmed().isEmpty()) {
      setStatus(tr("Type or choose a prompt first."));
      return false;
    }
    req.prompts << p;
    // One of the sample prompts draws as it does in grid mode (the same seed, the same text).
    if (const int k = static_cast<int>(sample_prompts_.indexOf(p)); k > 0) req.prompt_numbers = {k};
  }
  req.temperature = temperature_->value();
  req.top_p = top_p_->value();
  req.max_new_tokens = max_new_tokens_->value();
  req.seed = static_cast<quint64>(seed_->value());
  req.chat_template = chat_template_->isChecked();
  req.judge_command = judge_command_;  // the run's judge, as its samples and Evaluate use
  req.judge_timeout_s = judge_timeout_s_;
  if (!service_->generate(req)) return false;
  output_labels_ = req.labels;
  showLiveGrid(req.labels, req.prompts);
  generate_->setEnabled(false);
  cancel_->setEnabled(true);
  progress_->setRange(0, 0);  // busy until the first progress report
  progress_->setVisible(true);
  setStatus(tr("Generating %1 prompt(s) with %2 model(s)…").arg(req.prompts.size()).arg(req.model_dirs.size()));
  return true;
}

void CheckpointsView::onGenerateClicked() { generateNow(); }

void CheckpointsView::cancelGeneration() {
  if (!service_->isBusy()) return;
  service_->cancel();
  cancel_->setEnabled(false);
  setStatus(tr("Cancelling…"));
}

void CheckpointsView::onOutputs(const QVector<GenerationOutput>& outputs) {
  cancel_->setEnabled(false);
  progress_->setVisible(false);
  if (outputs.isEmpty()) {
    // Cancelled before the first model's turn ended (while it loaded): the service refuses an
    // empty request, so no outputs means a cancel. There is nothing to show; the columns stay,
    // without the "still sampling" mark, and the last outputs are kept.
    for (auto& [key, cell] : live_cells_) cell->setText(streaming_html(live_texts_[key], false));
    live_cells_.clear();
    setStatus(tr("Cancelled before any model produced text."));
    updateButtons();
    Q_EMIT generationFinished();
    return;
  }
  outputs_ = outputs;
  const bool cancelled = std::any_of(outputs.begin(), outputs.end(), [](const auto& o) { return o.cancelled; });
  double slowest = 0;
  for (const auto& o : outputs) slowest = std::max(slowest, o.seconds_total);
  QString status = cancelled ? tr("Cancelled; showing what was generated.")
                             : tr("%1 output(s); the slowest model took %2 s.").arg(outputs.size()).arg(slowest, 0, 'f', 2);
  if (!outputs.front().judge_error.isEmpty())
    status += QLatin1Char(' ') + tr("No judge scores: %1").arg(outputs.front().judge_error.right(600));
  setStatus(status);
  showOutputs();
  updateButtons();
  Q_EMIT generationFinished();
}

namespace {

// A page of output columns: a header per model, then per prompt a prompt row and one cell per
// model. cell_html(p, m) gives a cell's rich text (null QString = no cell); the cell labels are
// returned in `cells` so a live page can update them.
QWidget* output_grid(const QStringList& labels, const QStringList& prompts,
                     const std::function<QString(int, int)>& cell_html,
                     std::map<std::pair<int, int>, QLabel*>* cells) {
  auto* page = new QWidget;
  auto* grid = new QGridLayout(page);
  grid->setHorizontalSpacing(8);
  grid->setVerticalSpacing(4);
  const int n_models = static_cast<int>(labels.size());
  for (int m = 0; m < n_models; ++m) {
    auto* head = new QLabel(QStringLiteral("<b>%1</b>").arg(html_text(labels[m])), page);
    head->setAlignment(Qt::AlignCenter);
    grid->addWidget(head, 0, m);
    grid->setColumnStretch(m, 1);
  }
  int row = 1;
  for (int p = 0; p < prompts.size(); ++p) {
    auto* plabel = new QLabel(QStringLiteral("<b>Prompt %1:</b> %2").arg(p + 1).arg(html_text(prompts[p])), page);
    plabel->setWordWrap(true);
    plabel->setTextInteractionFlags(Qt::TextSelectableByMouse);
    plabel->setStyleSheet(QStringLiteral("QLabel { background: palette(alternate-base); padding: 4px; }"));
    grid->addWidget(plabel, row++, 0, 1, std::max(1, n_models));
    for (int m = 0; m < n_models; ++m) {
      const QString html = cell_html(p, m);
      if (html.isNull()) continue;
      auto* label = new QLabel(html, page);
      label->setObjectName(QStringLiteral("outputCell"));
      label->setTextFormat(Qt::RichText);
      label->setWordWrap(true);
      label->setTextInteractionFlags(Qt::TextSelectableByMouse);
      label->setAlignment(Qt::AlignTop | Qt::AlignLeft);
      label->setFrameShape(QFrame::StyledPanel);
      label->setMargin(6);
      label->setMinimumWidth(120);
      grid->addWidget(label, row, m);
      if (cells) (*cells)[{p, m}] = label;
    }
    ++row;
  }
  grid->setRowStretch(row, 1);
  return page;
}

QString streaming_html(const QString& text, bool sampling) {
  if (!sampling && text.isEmpty()) return QStringLiteral("<i style='color: gray;'>waiting…</i>");
  return QStringLiteral("<div style='white-space: pre-wrap;'>%1%2</div>")
      .arg(html_text(text), sampling ? QStringLiteral("<span style='color: gray;'>▍</span>") : QString());
}

}  // namespace

void CheckpointsView::showLiveGrid(const QStringList& labels, const QStringList& prompts) {
  live_cells_.clear();
  live_texts_.clear();
  outputs_area_->setWidget(output_grid(labels, prompts, [](int, int) { return streaming_html({}, false); }, &live_cells_));
  results_tabs_->setCurrentWidget(outputs_area_);
}

void CheckpointsView::onTextStreamed(int model_index, const QStringList& texts) {
  for (int p = 0; p < texts.size(); ++p) {
    auto it = live_cells_.find({p, model_index});
    if (it == live_cells_.end()) continue;
    live_texts_[{p, model_index}] = texts[p];
    it->second->setText(streaming_html(texts[p], true));
  }
}

QString CheckpointsView::liveText(int prompt_index, int model_index) const {
  auto it = live_texts_.find({prompt_index, model_index});
  return it == live_texts_.end() ? QString() : it->second;
}

void CheckpointsView::showOutputs() {
  live_cells_.clear();
  int n_models = 0, n_prompts = 0;
  for (const auto& o : outputs_) {
    n_models = std::max(n_models, o.model_index + 1);
    n_prompts = std::max(n_prompts, o.prompt_index + 1);
  }
  std::map<std::pair<int, int>, const GenerationOutput*> at;
  for (const auto& o : outputs_) at[{o.prompt_index, o.model_index}] = &o;
  QStringList labels = output_labels_.mid(0, n_models);
  for (const auto& o : outputs_)
    while (o.model_index >= labels.size()) labels << o.label;
  QStringList prompts;
  for (int p = 0; p < n_prompts; ++p) prompts << (at.count({p, 0}) ? at[{p, 0}]->prompt : QString());

  auto cell_html = [&](int p, int m) -> QString {
    auto it = at.find({p, m});
    if (it == at.end()) return {};
    const GenerationOutput& o = *it->second;
    const GenerationOutput* first = at.count({p, 0}) ? at[{p, 0}] : nullptr;
    QString body;
#ifdef GANPO_HAVE_WORD_DIFF
    if (m > 0 && first)
      body = diff_to_html(word_diff(first->text, o.text), /*show_removed=*/false, /*show_added=*/true);
    else
      body = html_text(o.text);
#else
    (void)first;
    body = html_text(o.text);
#endif
    if (o.text.isEmpty()) body = QStringLiteral("<i>(empty)</i>");
    QStringList facts;
    // Characters as a reader counts them, as the Samples tab does: code points, not UTF-16 units.
    facts << tr("%1 tokens").arg(o.tokens) << tr("%1 chars").arg(o.text.toUcs4().size());
    if (std::isfinite(o.judge_score)) facts << tr("judge %1").arg(o.judge_score, 0, 'f', 2);
    if (!o.chat_template.isEmpty()) facts << tr("chat template %1").arg(o.chat_template);
    if (o.precision == QStringLiteral("bf16")) facts << tr("bf16");  // (float32, the CPU's, goes unsaid)
    facts << tr("first token %1 s, done %2 s").arg(o.seconds_to_first_token, 0, 'f', 2).arg(o.seconds_total, 0, 'f', 2);
    if (o.cancelled) facts << tr("cancelled");
    QStringList lps;
    for (size_t k = 0; k < o.logprob_under_each_model.size(); ++k)
      lps << QStringLiteral("%1 %2")
                 .arg(html_text(static_cast<int>(k) < labels.size() ? labels[static_cast<int>(k)] : QString()))
                 .arg(number(o.logprob_under_each_model[k]));
    QString html = QStringLiteral("<div style='white-space: pre-wrap;'>%1</div>"
                                  "<p style='color: gray; font-size: small;'>%2")
                       .arg(body, facts.join(QStringLiteral(" · ")));
    if (!lps.isEmpty()) html += QStringLiteral("<br>log p under: ") + lps.join(QStringLiteral(" · "));
    return html + QStringLiteral("</p>");
  };
  std::map<std::pair<int, int>, QLabel*> cells;
  outputs_area_->setWidget(output_grid(labels, prompts, cell_html, &cells));
  // What the model was given, when its chat template changed the prompt.
  for (auto& [key, label] : cells) {
    const GenerationOutput& o = *at[key];
    if (o.model_prompt != o.prompt) label->setToolTip(tr("The model was given:\n%1").arg(o.model_prompt));
  }
  results_tabs_->setCurrentWidget(outputs_area_);
}

// ---- evaluation ----------------------------------------------------------------------------

bool CheckpointsView::isEvaluating() const {
  return eval_planning_ || eval_storing_ || eval_process_ != nullptr || !eval_queue_.empty();
}

void CheckpointsView::onEvaluateClicked() {
  QDialog dialog(this);
  dialog.setWindowTitle(tr("Evaluate checkpoints"));
  auto* form = new QFormLayout(&dialog);
  auto* prompts = new QSpinBox(&dialog);
  prompts->setRange(3, 3000);
  prompts->setValue(eval_options_.num_prompts);
  auto* tokens = new QSpinBox(&dialog);
  tokens->setRange(8, 1024);
  tokens->setValue(eval_options_.max_new_tokens);
  QStringList temps;
  for (double t : eval_options_.temperatures) temps << QString::fromStdString(temperature_label(t));
  auto* temperatures = new QLineEdit(temps.join(QLatin1Char(',')), &dialog);
  temperatures->setObjectName(QStringLiteral("temperatures"));
  auto* pairs = new QCheckBox(tr("Also score held-out preference pairs (accuracy, margins)"), &dialog);
  pairs->setChecked(eval_options_.preference_pairs);
  pairs->setEnabled(has_held_out_pairs_);
  QString what;
  if (!task_name_.isEmpty())
    what = tr("Judge win rates on the %1 task's prompts, against %2").arg(task_name_, reference_path_);
  else if (has_judge_command_)
    what = tr("Judge win rates by eval.judge_command on the run's held-out prompts, against %1").arg(reference_path_);
  else
    what = tr("Held-out pairs against %1 (a data file's run without eval.judge_command has no judge)").arg(reference_path_);
  form->addRow(new QLabel(what, &dialog));
  form->addRow(tr("Prompts per temperature"), prompts);
  form->addRow(tr("Temperatures"), temperatures);
  // What the temperatures read as, or why they do not ("1,3" is two temperatures, not 1.3).
  auto* read_as = new QLabel(&dialog);
  read_as->setObjectName(QStringLiteral("temperaturesReadAs"));
  form->addRow(QString(), read_as);
  form->addRow(tr("Max new tokens"), tokens);
  form->addRow(pairs);
  auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, &dialog);
  buttons->button(QDialogButtonBox::Ok)->setText(tr("Evaluate"));
  form->addRow(buttons);
  connect(buttons, &QDialogButtonBox::accepted, &dialog, &QDialog::accept);
  connect(buttons, &QDialogButtonBox::rejected, &dialog, &QDialog::reject);
  std::vector<double> parsed;
  auto reread = [&] {
    QString problem;
    try {
      parsed = parse_temperatures(temperatures->text().toStdString());
      if (parsed.empty()) problem = tr("Give at least one temperature, e.g. 0.7, 1.0");
    } catch (const ConfigError& e) {
      problem = QString::fromStdString(e.what());
    }
    QStringList shown;
    for (double t : parsed) shown << QString::fromStdString(temperature_label(t));
    read_as->setText(problem.isEmpty() ? tr("%n temperature(s): %1", nullptr, static_cast<int>(parsed.size())).arg(shown.join(QStringLiteral(", ")))
                                       : problem);
    read_as->setStyleSheet(problem.isEmpty() ? QStringLiteral("color: gray;") : QStringLiteral("color: #c62828;"));
    buttons->button(QDialogButtonBox::Ok)->setEnabled(problem.isEmpty());
  };
  connect(temperatures, &QLineEdit::textChanged, &dialog, reread);
  reread();
  if (dialog.exec() != QDialog::Accepted) return;
  CheckpointEvalOptions options;
  options.num_prompts = prompts->value();
  options.max_new_tokens = tokens->value();
  options.preference_pairs = pairs->isChecked();
  options.temperatures = parsed;
  QString why;
  if (!evaluatePicked(options, &why)) QMessageBox::information(this, tr("Evaluate"), why);
}

bool CheckpointsView::evaluatePicked(const CheckpointEvalOptions& options, QString* why) {
  auto fail = [&](const QString& message) {
    if (why) *why = message;
    setStatus(message);
    return false;
  };
  if (isEvaluating()) return fail(tr("An evaluation is already running."));
  if (reference_path_.isEmpty())
    return fail(tr("This run has no reference model folder (model.reference, or a model.checkpoint with weights; a "
                   "fresh or random-weights model's initial weights are not kept) to evaluate against."));
  std::vector<EvalJob> jobs;
  for (const auto& idx : table_->selectionModel()->selectedRows()) {
    auto* item = table_->item(idx.row(), 0);
    const auto step = item->data(kStepRole).toLongLong();
    if (step >= 0) jobs.push_back({step, item->data(kPathRole).toString()});
  }
  if (jobs.empty()) return fail(tr("Pick one or more checkpoints (not the reference) to evaluate."));
  std::sort(jobs.begin(), jobs.end(), [](const EvalJob& a, const EvalJob& b) { return a.step < b.step; });
  eval_options_ = options;
  eval_queue_ = std::move(jobs);
  startNextEval();
  updateButtons();
  return true;
}

void CheckpointsView::startNextEval() {
  if (eval_queue_.empty()) {
    updateButtons();
    return;
  }
  eval_current_ = eval_queue_.front();
  eval_queue_.erase(eval_queue_.begin());

  // What to run comes from the run service; this view only runs it and shows the outcome.
  const int64_t id = run_id_;
  const std::string checkpoint = eval_current_.checkpoint.toStdString(), scratch = QDir::tempPath().toStdString();
  const CheckpointEvalOptions options = eval_options_;
  eval_planning_ = true;
  store_->query<CheckpointEvalPlan>(
      this,
      [id, checkpoint, options, scratch](RunStore& s) { return RunService(s).plan_checkpoint_eval(id, checkpoint, options, scratch); },
      [this](CheckpointEvalPlan plan) { startEvalProcess(plan); },
      [this](const QString& error) { finishEvalWith(tr("Cannot evaluate step %1: %2").arg(eval_current_.step).arg(error)); });
}

void CheckpointsView::finishEvalWith(const QString& message) {
  const int64_t step = eval_current_.step;
  eval_planning_ = false;
  eval_queue_.clear();
  setStatus(message);
  updateButtons();
  Q_EMIT evaluationFinished(step, false, message);
}

void CheckpointsView::startEvalProcess(const CheckpointEvalPlan& plan) {
  eval_planning_ = false;
  if (!plan.refused.empty()) {
    finishEvalWith(tr("Cannot evaluate step %1: %2").arg(eval_current_.step).arg(QString::fromStdString(plan.refused)));
    return;
  }
  QStringList args;
  for (const auto& a : plan.arguments) args << QString::fromStdString(a);
  eval_params_json_ = QString::fromStdString(plan.params_json);

  eval_process_ = new QProcess(this);
  eval_process_->setProgram(worker_program_);
  eval_process_->setArguments(args);
  connect(eval_process_, &QProcess::finished, this, &CheckpointsView::onEvalProcessDone);
  connect(eval_process_, &QProcess::errorOccurred, this, [this](QProcess::ProcessError e) {
    if (e == QProcess::FailedToStart) onEvalProcessDone();
  });
  setStatus(tr("Evaluating step %1 against the reference in the background…").arg(eval_current_.step));
  eval_process_->start();
}

void CheckpointsView::onEvalProcessDone() {
  if (!eval_process_) return;
  QProcess* proc = eval_process_;
  eval_process_ = nullptr;
  proc->deleteLater();
  const int64_t step = eval_current_.step;
  const QByteArray out = proc->readAllStandardOutput();
  const QString err = QString::fromUtf8(proc->readAllStandardError()).trimmed();
  QString message;
  if (proc->error() == QProcess::FailedToStart) {
    message = tr("Cannot start %1 (%2); check that the ganpo command is installed next to the workbench or set "
                 "GANPO_CLI.")
                  .arg(worker_program_, proc->errorString());
  } else if (proc->exitStatus() != QProcess::NormalExit || proc->exitCode() > 1 ||
             (proc->exitCode() == 1 && !out.contains("\"judge_error\""))) {
    // Exit 1 with a report means the judge failed: the report (held-out numbers and the judge's
    // message) is still stored.
    message = tr("Evaluation of step %1 failed (exit code %2): %3")
                  .arg(step)
                  .arg(proc->exitCode())
                  .arg(err.isEmpty() ? tr("no message") : err.right(600));
  }
  if (!message.isEmpty()) {
    finishEvalWith(message);
    return;
  }
  const int64_t id = run_id_;
  const std::string params = eval_params_json_.toStdString(), printed = out.toStdString();
  const QString judge_failed = proc->exitCode() == 1 ? err.right(600) : QString();
  eval_storing_ = true;
  store_->query<int64_t>(
      this, [id, step, params, printed](RunStore& s) { return RunService(s).store_checkpoint_eval(id, step, params, printed); },
      [this, step, judge_failed](int64_t) {
        eval_storing_ = false;
        setStatus(judge_failed.isEmpty() ? tr("Evaluation of step %1 stored.").arg(step)
                                         : tr("Evaluation of step %1 stored without judge scores: %2").arg(step).arg(judge_failed));
        results_tabs_->setCurrentWidget(eval_table_);
        refresh();
        Q_EMIT evaluationFinished(step, true, QString());
        startNextEval();
      },
      [this, step](const QString& error) {
        eval_storing_ = false;
        finishEvalWith(tr("Cannot store the evaluation of step %1: %2").arg(step).arg(error));
      });
}

}  // namespace ganpo::ui