// CheckpointsView: the Checkpoints tab of a run. A table lists the run's checkpoints (step, time,
// the eval metrics saved with each and those of later evaluations) plus the run's reference
// model as an extra row; it is read through the StoreWorker and polled while the run is live.
// Pick two or more rows, type or choose a prompt (the run's sample prompts), set temperature /
// top-p / max new tokens / seed and press Generate: a GenerationService samples on a worker
// thread and the outputs appear side by side, one column per model, with word-level differences
// against the first column, each with its length, its log-prob under every picked model and its
// judge score; text streams into the columns as it is sampled, and each model gets the prompt
// in its own chat template (a checkbox turns that off). Grid mode samples the run's whole sample-prompt set. "Evaluate…" runs
// `ganpo eval --json` as a background process per picked checkpoint and stores the report in the
// run's evals; "Clone from this checkpoint…" asks the window to start a new run from it.
#pragma once

#include <QString>
#include <QStringList>
#include <QVector>
#include <QWidget>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "db/run_service.h"
#include "db/run_store.h"
#include "ui/generation_service.h"

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QGridLayout;
class QLabel;
class QProcess;
class QProgressBar;
class QPushButton;
class QScrollArea;
class QSpinBox;
class QTabWidget;
class QTableWidget;
class QTimer;

namespace ganpo::ui {

class StoreWorker;

// What "Evaluate…" runs for each picked checkpoint (the arguments of `ganpo eval`).
class CheckpointsView : public QWidget {
  Q_OBJECT
public:
  CheckpointsView(StoreWorker* store, int64_t run_id, QString worker_program, QWidget* parent = nullptr);
  ~CheckpointsView() override;

  // Polling for new checkpoints and evaluations on / off (loaded once either way).
  void setLive(bool live);
  // Re-reads checkpoints and evaluations now.
  void refresh();

  // For tests and scripting: the table, the picked model folders, the prompt and the controls.
  QTableWidget* table() const { return table_; }
  QTableWidget* evalTable() const { return eval_table_; }
  GenerationService* service() const { return service_; }
  int checkpointCount() const { return static_cast<int>(checkpoints_.size()); }
  QString referencePath() const { return reference_path_; }
  QStringList samplePrompts() const { return sample_prompts_; }
  // Picks the rows whose folders are given (reference included), replacing the selection.
  void pickFolders(const QStringList& dirs);
  QStringList pickedFolders() const;
  void setPrompt(const QString& prompt);
  void setSampling(double temperature, double top_p, int max_new_tokens, quint64 seed);
  void setGridMode(bool grid);
  // Starts generating with the picked models and the current settings; false if it cannot.
  bool generateNow();
  void cancelGeneration();
  const QVector<GenerationOutput>& lastOutputs() const { return outputs_; }
  // The text streamed so far into a cell while generating (empty before its model starts).
  QString liveText(int prompt_index, int model_index) const;
  void setChatTemplate(bool on);
  QString statusText() const;
  // Starts `ganpo eval` for each picked checkpoint (not the reference), one after another.
  bool evaluatePicked(const CheckpointEvalOptions& options, QString* why = nullptr);
  bool isEvaluating() const;

Q_SIGNALS:
  void cloneFromCheckpoint(qint64 run_id, qint64 step, QString path);
  void generationFinished();
  void evaluationFinished(qint64 step, bool ok, QString message);
  void loaded();

private:
  struct Snapshot {
    std::optional<RunRow> run;
    std::vector<CheckpointRow> checkpoints;
    std::vector<EvalRow> evals;
    std::vector<std::string> sample_prompts;
  };
  struct EvalJob {
    int64_t step = 0;
    QString checkpoint;
  };
  void onSnapshot(Snapshot s);
  void rebuildTable();
  void rebuildEvalTable();
  void updateButtons();
  void onGenerateClicked();
  void onEvaluateClicked();
  void onCloneClicked();
  void onOutputs(const QVector<GenerationOutput>& outputs);
  void showOutputs();
  void showLiveGrid(const QStringList& labels, const QStringList& prompts);
  void onTextStreamed(int model_index, const QStringList& texts);
  void startNextEval();
  void startEvalProcess(const CheckpointEvalPlan& plan);
  void onEvalProcessDone();
  // Ends the evaluation queue with a message (status line and evaluationFinished).
  void finishEvalWith(const QString& message);
  void setStatus(const QString& text);
  std::optional<int64_t> currentCheckpointStep(QString* path) const;

  StoreWorker* store_;
  int64_t run_id_;
  QString worker_program_;
  GenerationService* service_;
  QTimer* poll_;
  bool polling_ = false;
  bool loaded_once_ = false;

  std::vector<CheckpointRow> checkpoints_;
  std::vector<EvalRow> evals_;
  QString config_json_;
  QString reference_path_;
  QString reference_source_;  // "model.reference" | "model.checkpoint"
  bool eval_planning_ = false;       // the run service is planning the next evaluation
  bool eval_storing_ = false;        // the run service is storing the last one
  bool has_held_out_pairs_ = false;  // a built-in task's or the run's data.eval
  QString task_name_;                // the run's built-in task; empty for data files
  bool has_judge_command_ = false;   // the run's eval.judge_command judges a data file's prompts
  QString judge_command_;            // that command, which the playground's outputs go to too
  double judge_timeout_s_ = 600;     // and its eval.judge_timeout_s
  QStringList sample_prompts_;

  QTableWidget* table_;
  QComboBox* prompt_;
  QDoubleSpinBox* temperature_;
  QDoubleSpinBox* top_p_;
  QSpinBox* max_new_tokens_;
  QSpinBox* seed_;
  QCheckBox* grid_;
  QCheckBox* chat_template_;
  QPushButton* generate_;
  QPushButton* cancel_;
  QPushButton* evaluate_;
  QPushButton* clone_;
  QProgressBar* progress_;
  QLabel* status_;
  QTabWidget* results_tabs_;
  QScrollArea* outputs_area_;
  QTableWidget* eval_table_;

  QVector<GenerationOutput> outputs_;
  QStringList output_labels_;
  std::map<std::pair<int, int>, QLabel*> live_cells_;  // (prompt, model) -> cell while generating
  std::map<std::pair<int, int>, QString> live_texts_;

  std::vector<EvalJob> eval_queue_;
  CheckpointEvalOptions eval_options_;
  QProcess* eval_process_ = nullptr;
  EvalJob eval_current_;
  QString eval_params_json_;
};

}  // namespace ganpo::ui
