// StudyDialog ("New Study"): a base run config (a preset, a run of the workspace, or a config
// file), a grid of config keys with their values (one row per key; the runs are the cartesian
// product, the first key varying slowest), seeds, whether the base config's pipeline stages are
// shared (trained once, every arm starting from and judged against their final weights), and
// how many runs at once. Every edit checks each key and value (the reason beside its row),
// expands the study as `ganpo study plan` does (an invalid combination is named with its arm and
// seed before anything runs) and shows the run count and an estimated duration at this
// workspace's measured speed. Start is enabled only when everything is valid; Save writes the
// study as a TOML file for `ganpo study create`.
#pragma once

#include <QDialog>
#include <QString>
#include <QStringList>

#include <vector>

#include "core/study_spec.h"
#include "db/run_speed.h"

class QCheckBox;
class QComboBox;
class QDialogButtonBox;
class QLabel;
class QLineEdit;
class QSpinBox;
class QTableWidget;

namespace ganpo::ui {

class StudyDialog : public QDialog {
  Q_OBJECT
public:
  struct Base {
    QString label;  // "Preset: Demo (CPU, minutes)", "Run 12: dpo-beta-0.1"
    RunConfig config;
  };
  StudyDialog(std::vector<Base> bases, WorkSpeed speed, QWidget* parent = nullptr);

  void setBase(int index);
  int baseCount() const { return static_cast<int>(bases_.size()); }
  void setName(const QString& name);
  // One grid row: a config key and its values, comma-separated ("sigmoid, simpo"; a value with a
  // comma in double quotes).
  void addGridRow(const QString& key, const QString& values);
  void clearGrid();
  void setSeeds(const QString& text);
  void setShareStages(bool share);
  void setJobs(int jobs);

  // The study as shown (check problems() first).
  StudySpec spec() const;
  int jobs() const;
  QStringList problems() const { return problems_; }
  int runCount() const { return run_count_; }
  QString summaryText() const;

private:
  void onBaseChosen(int index);
  void onLoadBase();
  void onSave();
  void revalidate();
  int addRowWidgets();

  std::vector<Base> bases_;
  WorkSpeed speed_;
  QComboBox* base_combo_;
  QLabel* base_summary_;
  QLineEdit* name_;
  QTableWidget* grid_;
  QLineEdit* seeds_;
  QCheckBox* share_stages_;
  QSpinBox* jobs_;
  QLabel* summary_;
  QLabel* problem_label_;
  QDialogButtonBox* buttons_;
  QStringList problems_;
  int run_count_ = 0;
};

// "sigmoid, simpo" -> {"sigmoid", "simpo"}; commas inside double quotes stay, the quotes go.
QStringList split_grid_values(const QString& text);
// "44m", "1h05m", "50s".
QString format_estimated_duration(double seconds);

}  // namespace ganpo::ui
