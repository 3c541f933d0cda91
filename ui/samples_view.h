// SamplesView: the live Samples tab of one run. The trainer samples a fixed set of prompts every
// N steps; this shows them at one step k as a table (prompt | reference | policy at step k), with
// judge scores where a judge exists ("-" otherwise), response lengths in words and characters,
// and a word-diff highlight (word_diff.h) between reference and policy, or between the policy at
// another step A and at step k, or none. A slider that snaps to the steps having samples, a spin
// box showing the step and a Play button pick k. While live, the list of sample steps is polled
// about once a second, and a view sitting at the last step follows new steps as they arrive.
// Every query goes through the StoreWorker; the UI thread never waits on SQLite.
#pragma once

#include <QString>
#include <QTimer>
#include <QWidget>

#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "db/run_store.h"

class QComboBox;
class QLabel;
class QSlider;
class QTableWidget;
class QToolButton;

namespace ganpo::ui {

class SampleStepSpinBox;
class StoreWorker;

class SamplesView : public QWidget {
  Q_OBJECT
public:
  enum class DiffMode { ReferenceToPolicy, StepToStep, None };
  enum Column { PromptColumn = 0, ReferenceColumn, PolicyColumn, ColumnCount };
  static constexpr int kPollIntervalMs = 1000;
  static constexpr int kPlayIntervalMs = 900;
  // Bytes of one text shown and diffed; lengths are always counted on the whole text.
  static constexpr size_t kMaxShownBytes = 4000;

  SamplesView(StoreWorker* store, int64_t run_id, QWidget* parent = nullptr);

  // Polling for new sample steps on / off (a finished run is loaded once either way).
  void setLive(bool live);
  bool isLive() const { return poll_timer_.isActive(); }
  // One query for the list of sample steps now (if none is in flight).
  void pollNow();

  // The step shown (-1 before the run has samples).
  int64_t currentStep() const;
  // Shows the sample step nearest to step.
  void setStep(int64_t step);
  // The steps that have samples, ascending.
  std::vector<int64_t> steps() const { return steps_; }
  // Rows shown (one per prompt of the current step, once its samples have arrived).
  int rowCount() const;
  // The step whose samples the table shows now (-1 while none are shown).
  int64_t shownStep() const { return shown_step_; }

  void setDiffMode(DiffMode mode);
  DiffMode diffMode() const { return mode_; }
  // Step A of "diff: step A -> step k" (snapped to a sample step); -1: the step before k.
  void setCompareStep(int64_t step);
  int64_t compareStep() const;

  void setPlaying(bool playing);
  bool isPlaying() const { return play_timer_.isActive(); }
  void setPlayInterval(int ms) { play_timer_.setInterval(ms); }

  // The table's content, for tests and copy: plain text, cell HTML, footer line.
  QString cellText(int row, Column column) const;
  QString cellHtml(int row, Column column) const;
  QString cellFooter(int row, Column column) const;
  QString summaryText() const;
  QTableWidget* table() const { return table_; }

Q_SIGNALS:
  // The table now shows the samples of step.
  void stepShown(qint64 step);
  void stepsChanged(int count);

private:
  void onSteps(std::vector<std::pair<int64_t, int64_t>> versions);  // (step, its newest row id)
  void setIndex(int index);
  void stepBy(int delta);
  void showCurrent();
  void request(int64_t step);
  void render();
  void updateControls();
  void scheduleRowResize();
  void onPlayTick();
  int indexNearest(int64_t step) const;
  int64_t effectiveCompareStep() const;

  StoreWorker* store_;
  int64_t run_id_;
  std::vector<int64_t> steps_;
  int index_ = -1;               // into steps_
  int64_t compare_step_ = -1;    // -1: the step before the current one
  int64_t shown_step_ = -1;
  DiffMode mode_ = DiffMode::ReferenceToPolicy;
  std::map<int64_t, std::vector<SampleRow>> cache_;  // step -> its samples
  std::set<int64_t> pending_;                         // sample queries in flight
  bool steps_in_flight_ = false;
  bool resize_scheduled_ = false;
  QTimer poll_timer_;
  QTimer play_timer_;

  QToolButton* play_button_ = nullptr;
  QSlider* slider_ = nullptr;
  SampleStepSpinBox* spin_ = nullptr;
  QLabel* range_label_ = nullptr;
  QComboBox* mode_combo_ = nullptr;
  QLabel* compare_label_ = nullptr;
  QComboBox* compare_combo_ = nullptr;
  QLabel* summary_label_ = nullptr;
  QTableWidget* table_ = nullptr;
};

}  // namespace ganpo::ui
