#include "ui/study_dialog.h"

#include <QCheckBox>
#include <QComboBox>
#include <QCompleter>
#include <QDialogButtonBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QMessageBox>
#include <QPushButton>
#include <QSaveFile>
#include <QSpinBox>
#include <QTableWidget>
#include <QVBoxLayout>

#include <cmath>

#include "core/error.h"
#include "core/toml_assignments.h"

namespace ganpo::ui {
namespace {

enum Column { kKey = 0, kValues = 1, kProblem = 2 };

QLineEdit* cell_edit(QTableWidget* table, int row, int column) {
  return qobject_cast<QLineEdit*>(table->cellWidget(row, column));
}

// What a base config is, in one line.
QString describe_base(const RunConfig& c) {
  QString text = QStringLiteral("%1 stage, %2 model, %3, %4%5, %6 steps")
                     .arg(QString::fromStdString(c.stage),
                          QString::fromStdString(c.model.checkpoint.empty() ? c.model.preset + " (fresh)" : c.model.checkpoint),
                          QString::fromStdString(uses_builtin_task(c.data) ? "built-in " + builtin_task_name(c.data) + " task"
                                                                           : c.data.train),
                          QString::fromStdString(c.objective.loss_type), c.ganpo.enabled ? QStringLiteral(" + GANPO") : QString())
                     .arg(c.train.max_steps);
  if (!c.pipeline.empty()) {
    QStringList stages;
    for (const auto& s : c.pipeline) stages << QString::fromStdString(s.name);
    text += QStringLiteral("; after the stage(s) %1").arg(stages.join(QStringLiteral(", ")));
  }
  return text;
}

}  // namespace

QStringList split_grid_values(const QString& text) {
  QStringList out;
  QString current;
  bool quoted = false, was_quoted = false;
  for (const QChar ch : text) {
    if (ch == QLatin1Char('"')) {
      quoted = !quoted;
      was_quoted = true;
    } else if (ch == QLatin1Char(',') && !quoted) {
      out << (was_quoted ? current : current.trimmed());
      current.clear();
      was_quoted = false;
    } else {
      current += ch;
    }
  }
  if (!current.trimmed().isEmpty() || was_quoted || !out.isEmpty()) out << (was_quoted ? current : current.trimmed());
  return out;
}

QString format_estimated_duration(double seconds) {
  const long long s = std::llround(std::max(0.0, seconds));
  if (s < 60) return QStringLiteral("%1s").arg(s);
  if (s < 3600) return QStringLiteral("%1m").arg((s + 30) / 60);
  const long long m = (s + 30) / 60;
  return QStringLiteral("%1h%2m").arg(m / 60).arg(m % 60, 2, 10, QLatin1Char('0'));
}

StudyDialog::StudyDialog(std::vector<Base> bases, WorkSpeed speed, QWidget* parent)
    : QDialog(parent), bases_(std::move(bases)), speed_(speed) {
  setWindowTitle(tr("New Study"));
  auto* layout = new QVBoxLayout(this);
  auto* intro = new QLabel(tr("A study trains every combination of the values below, once per seed, from one base run "
                              "config, then evaluates every run and reports each arm's mean with a 95% interval over "
                              "seeds, and GANPO on minus off paired by seed."),
                           this);
  intro->setWordWrap(true);
  layout->addWidget(intro);

  auto* form = new QFormLayout;
  name_ = new QLineEdit(this);
  name_->setObjectName(QStringLiteral("study.name"));
  form->addRow(tr("&Name"), name_);
  auto* base_row = new QHBoxLayout;
  base_combo_ = new QComboBox(this);
  base_combo_->setObjectName(QStringLiteral("study.base"));
  for (const Base& b : bases_) base_combo_->addItem(b.label);
  auto* load = new QPushButton(tr("Load config…"), this);
  load->setObjectName(QStringLiteral("study.loadBase"));
  base_row->addWidget(base_combo_, 1);
  base_row->addWidget(load);
  form->addRow(tr("Base config"), base_row);
  base_summary_ = new QLabel(this);
  base_summary_->setObjectName(QStringLiteral("study.baseSummary"));
  base_summary_->setWordWrap(true);
  form->addRow(QString(), base_summary_);
  layout->addLayout(form);

  auto* grid_label = new QLabel(tr("Grid: one row per config key, its values separated by commas"), this);
  layout->addWidget(grid_label);
  grid_ = new QTableWidget(0, 3, this);
  grid_->setObjectName(QStringLiteral("study.grid"));
  grid_->setHorizontalHeaderLabels({tr("Key"), tr("Values"), tr("Check")});
  grid_->horizontalHeader()->setSectionResizeMode(kKey, QHeaderView::Interactive);
  grid_->horizontalHeader()->setSectionResizeMode(kValues, QHeaderView::Stretch);
  grid_->horizontalHeader()->setSectionResizeMode(kProblem, QHeaderView::Stretch);
  grid_->setColumnWidth(kKey, 220);
  grid_->verticalHeader()->setVisible(false);
  grid_->setSelectionBehavior(QAbstractItemView::SelectRows);
  grid_->setMinimumHeight(150);
  layout->addWidget(grid_, 1);
  auto* grid_buttons = new QHBoxLayout;
  auto* add = new QPushButton(tr("Add key"), this);
  auto* remove = new QPushButton(tr("Remove key"), this);
  add->setObjectName(QStringLiteral("study.addKey"));
  remove->setObjectName(QStringLiteral("study.removeKey"));
  grid_buttons->addWidget(add);
  grid_buttons->addWidget(remove);
  grid_buttons->addStretch(1);
  layout->addLayout(grid_buttons);

  auto* options = new QFormLayout;
  seeds_ = new QLineEdit(QStringLiteral("1, 2, 3"), this);
  seeds_->setObjectName(QStringLiteral("study.seeds"));
  seeds_->setToolTip(tr("Every arm runs once per seed; intervals need at least two."));
  options->addRow(tr("&Seeds"), seeds_);
  share_stages_ = new QCheckBox(this);
  share_stages_->setObjectName(QStringLiteral("study.shareStages"));
  share_stages_->setChecked(true);
  options->addRow(QString(), share_stages_);
  jobs_ = new QSpinBox(this);
  jobs_->setObjectName(QStringLiteral("study.jobs"));
  jobs_->setRange(0, 64);
  jobs_->setSpecialValueText(tr("Auto: one per GPU, or one on a CPU"));
  jobs_->setToolTip(tr("Runs trained at once. On a CPU, one at a time uses every core; with several GPUs, one per GPU."));
  options->addRow(tr("Runs at &once"), jobs_);
  layout->addLayout(options);

  summary_ = new QLabel(this);
  summary_->setObjectName(QStringLiteral("study.summary"));
  summary_->setWordWrap(true);
  problem_label_ = new QLabel(this);
  problem_label_->setObjectName(QStringLiteral("study.problems"));
  problem_label_->setWordWrap(true);
  problem_label_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  problem_label_->setStyleSheet(QStringLiteral("color: #b00020"));
  layout->addWidget(summary_);
  layout->addWidget(problem_label_);

  buttons_ = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, this);
  buttons_->button(QDialogButtonBox::Ok)->setText(tr("Start study"));
  auto* save = buttons_->addButton(tr("Save study…"), QDialogButtonBox::ActionRole);
  save->setObjectName(QStringLiteral("study.save"));
  layout->addWidget(buttons_);

  connect(base_combo_, &QComboBox::activated, this, &StudyDialog::onBaseChosen);
  connect(load, &QPushButton::clicked, this, &StudyDialog::onLoadBase);
  connect(add, &QPushButton::clicked, this, [this] {
    const int row = addRowWidgets();
    cell_edit(grid_, row, kKey)->setFocus();
    revalidate();
  });
  connect(remove, &QPushButton::clicked, this, [this] {
    const int row = grid_->currentRow() >= 0 ? grid_->currentRow() : grid_->rowCount() - 1;
    if (row >= 0) grid_->removeRow(row);
    revalidate();
  });
  connect(seeds_, &QLineEdit::textChanged, this, &StudyDialog::revalidate);
  connect(name_, &QLineEdit::textChanged, this, &StudyDialog::revalidate);
  connect(share_stages_, &QCheckBox::toggled, this, &StudyDialog::revalidate);
  connect(jobs_, qOverload<int>(&QSpinBox::valueChanged), this, &StudyDialog::revalidate);
  connect(save, &QPushButton::clicked, this, &StudyDialog::onSave);
  connect(buttons_, &QDialogButtonBox::accepted, this, [this] {
    if (problems_.isEmpty()) accept();
  });
  connect(buttons_, &QDialogButtonBox::rejected, this, &QDialog::reject);

  // The question a study asks first: does GANPO help its base objective?
  addGridRow(QStringLiteral("ganpo.enabled"), QStringLiteral("false, true"));
  if (!bases_.empty()) setBase(0);
  resize(820, 620);
}

int StudyDialog::addRowWidgets() {
  const int row = grid_->rowCount();
  grid_->insertRow(row);
  auto* key = new QLineEdit(grid_);
  key->setObjectName(QStringLiteral("study.key.%1").arg(row));
  key->setPlaceholderText(tr("section.key"));
  QStringList keys;
  for (const auto& k : config_keys())
    if (k != "name" && k != "seed" && k != "output_dir") keys << QString::fromStdString(k);
  auto* completer = new QCompleter(keys, key);
  completer->setCaseSensitivity(Qt::CaseInsensitive);
  completer->setFilterMode(Qt::MatchContains);
  key->setCompleter(completer);
  auto* values = new QLineEdit(grid_);
  values->setObjectName(QStringLiteral("study.values.%1").arg(row));
  values->setPlaceholderText(tr("value, value, ..."));
  auto* problem = new QLabel(grid_);
  problem->setWordWrap(true);
  grid_->setCellWidget(row, kKey, key);
  grid_->setCellWidget(row, kValues, values);
  grid_->setCellWidget(row, kProblem, problem);
  connect(key, &QLineEdit::textChanged, this, &StudyDialog::revalidate);
  connect(values, &QLineEdit::textChanged, this, &StudyDialog::revalidate);
  return row;
}

void StudyDialog::addGridRow(const QString& key, const QString& values) {
  const int row = addRowWidgets();
  cell_edit(grid_, row, kKey)->setText(key);
  cell_edit(grid_, row, kValues)->setText(values);
  revalidate();
}

void StudyDialog::clearGrid() {
  grid_->setRowCount(0);
  revalidate();
}

void StudyDialog::setBase(int index) {
  if (index < 0 || index >= baseCount()) return;
  base_combo_->setCurrentIndex(index);
  onBaseChosen(index);
}

void StudyDialog::setName(const QString& name) { name_->setText(name); }
void StudyDialog::setSeeds(const QString& text) { seeds_->setText(text); }
void StudyDialog::setShareStages(bool share) { share_stages_->setChecked(share); }
void StudyDialog::setJobs(int jobs) { jobs_->setValue(jobs); }
int StudyDialog::jobs() const { return jobs_->value(); }

void StudyDialog::onBaseChosen(int index) {
  if (index < 0 || index >= baseCount()) return;
  const RunConfig& c = bases_[static_cast<size_t>(index)].config;
  name_->setText(QString::fromStdString(c.name) + tr(" study"));
  base_summary_->setText(describe_base(c));
  QStringList stages;
  for (const auto& s : c.pipeline) stages << QString::fromStdString(s.name);
  share_stages_->setVisible(!c.pipeline.empty());
  share_stages_->setText(tr("Train the base config's stage(s) %1 once and start every run from them (unticked: every "
                            "run starts from the base config's own model)")
                             .arg(stages.join(QStringLiteral(", "))));
  revalidate();
}

void StudyDialog::onLoadBase() {
  const QString path = QFileDialog::getOpenFileName(this, tr("Base run config"), QString(),
                                                    tr("Run configs (*.toml *.json)"));
  if (path.isEmpty()) return;
  try {
    bases_.push_back({tr("File: %1").arg(path), load_config_file(path.toStdString())});
  } catch (const ConfigError& e) {
    QMessageBox::warning(this, tr("Base config"), QString::fromStdString(e.what()));
    return;
  }
  base_combo_->addItem(bases_.back().label);
  setBase(baseCount() - 1);
}

StudySpec StudyDialog::spec() const {
  StudySpec spec;
  const int index = base_combo_->currentIndex();
  if (index >= 0 && index < baseCount()) spec.base = bases_[static_cast<size_t>(index)].config;
  spec.name = name_->text().trimmed().toStdString();
  if (share_stages_->isChecked()) spec.stages = spec.base.pipeline;
  spec.base.pipeline.clear();
  for (int row = 0; row < grid_->rowCount(); ++row) {
    const QString key = cell_edit(grid_, row, kKey)->text().trimmed();
    if (key.isEmpty()) continue;
    std::vector<std::string> values;
    for (const QString& v : split_grid_values(cell_edit(grid_, row, kValues)->text())) values.push_back(v.toStdString());
    spec.grid.emplace_back(key.toStdString(), std::move(values));
  }
  for (const QString& part : seeds_->text().split(QLatin1Char(','), Qt::SkipEmptyParts)) {
    bool ok = false;
    const qlonglong seed = part.trimmed().toLongLong(&ok);
    if (ok) spec.seeds.push_back(seed);
  }
  return spec;
}

QString StudyDialog::summaryText() const { return summary_->text(); }

void StudyDialog::revalidate() {
  problems_.clear();
  if (baseCount() == 0) problems_ << tr("Pick a base config (Load config…).");
  if (name_->text().trimmed().isEmpty()) problems_ << tr("Give the study a name.");
  // Seeds: integers, distinct.
  QStringList seed_parts = seeds_->text().split(QLatin1Char(','), Qt::SkipEmptyParts);
  if (seed_parts.isEmpty()) problems_ << tr("Seeds: give at least one, e.g. 1, 2, 3.");
  for (const QString& part : seed_parts) {
    bool ok = false;
    part.trimmed().toLongLong(&ok);
    if (!ok) problems_ << tr("Seeds: \"%1\" is not an integer.").arg(part.trimmed());
  }
  // Each row: a known key the study may vary, values of its type, no key twice.
  QStringList seen;
  for (int row = 0; row < grid_->rowCount(); ++row) {
    const QString key = cell_edit(grid_, row, kKey)->text().trimmed();
    const QStringList values = split_grid_values(cell_edit(grid_, row, kValues)->text());
    auto* label = qobject_cast<QLabel*>(grid_->cellWidget(row, kProblem));
    QString problem;
    try {
      if (key.isEmpty()) {
        if (!values.isEmpty()) problem = tr("name the key these values are for");
      } else {
        refuse_per_run_keys(key.toStdString(), key.toStdString());
        if (seen.contains(key)) problem = tr("this key has a row already");
        seen << key;
        if (values.isEmpty()) problem = tr("give at least one value");
        for (const QString& v : values) {
          if (!problem.isEmpty()) break;
          if (v.isEmpty()) problem = tr("an empty value (two commas in a row?)");
          else check_assignment(key.toStdString() + "=" + v.toStdString(), key.toStdString());
          if (values.count(v) > 1) problem = tr("\"%1\" is listed twice").arg(v);
        }
        if (problem.isEmpty()) {
          std::vector<std::string> texts;
          for (const QString& v : values) texts.push_back(v.toStdString());
          refuse_same_settings(key.toStdString(), texts, key.toStdString());  // "0.1" and "0.10"
        }
      }
    } catch (const ConfigError& e) {
      problem = QString::fromStdString(e.what());
    }
    label->setText(problem.isEmpty() ? (key.isEmpty() ? QString() : tr("%n value(s)", nullptr, static_cast<int>(values.size())))
                                     : problem);
    label->setStyleSheet(problem.isEmpty() ? QString() : QStringLiteral("color: #b00020"));
    if (!problem.isEmpty()) problems_ << tr("Grid row %1: %2").arg(row + 1).arg(problem);
  }
  // The whole study, as `ganpo study plan` checks it: every run's config valid.
  run_count_ = 0;
  if (problems_.isEmpty()) {
    try {
      const StudySpec s = spec();
      const std::vector<StudyRun> runs = expand_study(s, "/nonexistent/study");
      run_count_ = static_cast<int>(runs.size());
      std::vector<RunConfig> configs;
      for (const auto& r : runs) configs.push_back(r.config);
      const DurationEstimate estimate = estimate_duration(configs, speed_);
      size_t arms = 1;
      for (const auto& [key, values] : s.grid) arms *= values.size();
      const QString at_once = jobs() > 1 ? tr(" (%1 with %2 at once, if the machine has room for them)")
                                                .arg(format_estimated_duration(estimate.seconds / jobs()))
                                                .arg(jobs())
                                          : QString();
      summary_->setText(tr("%1 runs = %2 shared stage(s) + %3 arm(s) x %4 seed(s). Estimated duration: %5 one after "
                           "another%6, %7.")
                            .arg(run_count_)
                            .arg(s.stages.size())
                            .arg(arms)
                            .arg(s.seeds.size())
                            .arg(format_estimated_duration(estimate.seconds), at_once,
                                 QString::fromStdString(estimate.basis)));
    } catch (const ConfigError& e) {
      problems_ << QString::fromStdString(e.what()).replace(QStringLiteral("/nonexistent/study/"), QString());
    }
  }
  if (!problems_.isEmpty()) summary_->setText(tr("Not ready: %n problem(s) to fix.", nullptr, static_cast<int>(problems_.size())));
  problem_label_->setText(problems_.join(QLatin1Char('\n')));
  buttons_->button(QDialogButtonBox::Ok)->setEnabled(problems_.isEmpty());
}

void StudyDialog::onSave() {
  const QString path = QFileDialog::getSaveFileName(this, tr("Save study"), name_->text().trimmed() + ".toml",
                                                    tr("Study files (*.toml)"));
  if (path.isEmpty()) return;
  QSaveFile file(path);
  if (!file.open(QIODevice::WriteOnly) || file.write(QByteArray::fromStdString(study_to_toml(spec()))) < 0 ||
      !file.commit())
    QMessageBox::warning(this, tr("Save study"), tr("Cannot write %1: %2").arg(path, file.errorString()));
}

}  // namespace ganpo::ui
