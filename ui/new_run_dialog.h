// NewRunDialog: the "New Run" (and "Clone and edit") dialog. Every key of RunConfig on six
// pages (Model, Data, Objective, Optimisation, Device, Monitoring) plus name and output folder,
// the built-in presets, load/save as TOML, a live memory estimate and a JSONL preview. The Model
// page starts from a Hugging Face folder (shown as `ganpo inspect` shows it; the reference
// defaults to it) or a fresh shape; the preview shows a row rendered and tokenized as training
// will (chat template, prompt / completion boundary, truncation).
//
// Every edit rebuilds the config from the form and runs validate_config on it; each message is
// shown in red beside the field its key names, a summary line sits above the buttons, and OK
// stays disabled while anything is invalid. No torch here; the caller takes config() on accept.
#pragma once

#include <QDialog>
#include <QString>
#include <QStringList>

#include "core/config.h"

class QCheckBox;
class QComboBox;
class QDialogButtonBox;
class QLabel;
class QLineEdit;
class QTabWidget;
class QWidget;

namespace ganpo::ui {

class ConfigForm;
class DatasetPreviewWidget;
class FormSection;
class MemoryEstimateLabel;
class ModelFolderPanel;

class NewRunDialog : public QDialog {
  Q_OBJECT
public:
  explicit NewRunDialog(QWidget* parent = nullptr);

  void setConfig(const ganpo::RunConfig& config);
  ganpo::RunConfig config() const;
  // Loads the built-in preset ":/presets/<file_stem>.toml" into the form; false if there is none.
  bool selectPreset(const QString& file_stem);
  static QStringList presetFileStems();
  // The current problems: text that is not a number, then validate_config's messages.
  QStringList problems() const { return problems_; }

  // Load / save a TOML (or JSON) config file; a failure is shown in a message box.
  bool loadConfigFile(const QString& path);
  bool saveConfigFile(const QString& path);

private:
  void buildTopRow(QWidget* parent);
  QWidget* buildModelPage();
  QWidget* buildDataPage();
  QWidget* buildObjectivePage();
  QWidget* buildOptimisationPage();
  QWidget* buildDevicePage();
  QWidget* buildMonitoringPage();

  void onPresetActivated(int index);
  void onLoadClicked();
  void onSaveClicked();
  void revalidate();               // form -> config -> problems, labels, OK, estimate
  void updateDependentWidgets(const RunConfig& config);

  RunConfig base_;      // the last config set; keeps values whose text does not parse
  bool loading_ = false;  // setConfig is filling the editors: no revalidation per field
  QStringList problems_;
  ConfigForm* form_;
  QComboBox* preset_combo_;
  QTabWidget* pages_;
  QLabel* resolved_shape_;
  FormSection* shape_section_;      // the fresh model's shape: hidden when a folder is named
  ModelFolderPanel* model_folder_;  // what the folder in model.checkpoint holds
  QLineEdit* reference_;
  QCheckBox* random_weights_;  // only with a model folder: a fresh model is random anyway
  FormSection* builtin_data_;
  FormSection* file_data_;
  FormSection* ganpo_section_;
  QComboBox* length_mode_;     // train for steps or for epochs
  QLineEdit* max_steps_;
  QLineEdit* epochs_;
  DatasetPreviewWidget* preview_;
  MemoryEstimateLabel* memory_;
  QLabel* summary_;
  QWidget* pipeline_row_;    // shown for a config with [[pipeline]] stages
  QLabel* pipeline_;
  QDialogButtonBox* buttons_;
};

}  // namespace ganpo::ui
