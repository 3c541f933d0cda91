// ScreenshotTour: a scripted walk through the workbench for the README and for measuring the UI:
// opens the New Run dialog on the demo preset (screenshot), queues the demo pipeline with a
// DPO-only twin of its preference stage (one study: the SFT stage, then both arms at once),
// takes screenshots of the main window and the live dashboard while the GANPO arm trains (an
// event-loop probe measures the UI thread meanwhile), waits until both arms have finished, then
// shoots the Samples tab, the Checkpoints tab with two checkpoints generating side by side and
// the Compare tab of the two trained arms, and quits. Used by packaging/take-screenshots.sh
// (`ganpo-workbench --screenshots DIR`); about five minutes on two cores.
#pragma once

#include <QElapsedTimer>
#include <QObject>
#include <QString>
#include <QTimer>

#include <cstdint>
#include <functional>

#include "db/run_status.h"

namespace ganpo::ui {

class MainWindow;

// Measures the UI thread two ways: how late a 5 ms timer ticks (wall clock: includes time the
// OS gave the CPU to the training worker), and the most CPU time the UI thread spent on one event
// (its own work only, measured between consecutive events with the thread's CPU clock).
class EventLoopProbe : public QObject {
  Q_OBJECT
public:
  explicit EventLoopProbe(QObject* parent = nullptr);
  double longestStallMs() const { return longest_ms_; }
  double longestBusyCpuMs() const { return longest_busy_ms_; }
  qint64 ticks() const { return ticks_; }
  bool eventFilter(QObject* watched, QEvent* event) override;
  // The receiver class and event type of the costliest event seen.
  const QString& longestEvent() const { return longest_event_; }

private:
  QTimer timer_;
  QElapsedTimer clock_;
  qint64 last_ms_ = 0, ticks_ = 0;
  double longest_ms_ = 0;
  double last_event_cpu_ms_ = -1, longest_busy_ms_ = 0;
  QString last_event_, longest_event_;
};

class ScreenshotTour : public QObject {
  Q_OBJECT
public:
  // live_seconds: how long the GANPO arm trains before the dashboard screenshot.
  ScreenshotTour(MainWindow* window, QString out_dir, int live_seconds, QObject* parent = nullptr);
  void start();

private:
  static constexpr int64_t kGanpoRun = 2, kDpoRun = 3;  // after the SFT stage, run 1
  void save(QWidget* widget, const QString& name);
  void when(const std::function<bool()>& ready, int seconds, const std::function<void()>& fn);
  RunStatus statusOf(int64_t run_id) const;
  void afterLive();      // the GANPO arm's tab brought forward, its metrics awaited
  void shootLive();      // main window + dashboard shots, then wait for both arms to finish
  void shootRunTabs();   // Samples, Checkpoints (two side by side) and Compare shots
  MainWindow* window_;
  QString out_dir_;
  int live_seconds_;
  EventLoopProbe* probe_ = nullptr;         // from the start of the run
  EventLoopProbe* steady_probe_ = nullptr;  // once its tab is open
};

}  // namespace ganpo::ui
