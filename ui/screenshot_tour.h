// ScreenshotTour: a scripted walk through the workbench for the README and for measuring the UI:
// opens the New Run dialog on the demo preset (screenshot), starts the demo run and a DPO-only
// twin, lets them train while an event-loop probe measures the UI thread, takes screenshots of the
// main window and the live dashboard, stops both, then shoots the Samples tab, the Checkpoints
// tab with two checkpoints generating side by side, and the Compare tab, and quits. Used by
// packaging/take-screenshots.sh (`ganpo-workbench --screenshots DIR`).
#pragma once

#include <QElapsedTimer>
#include <QObject>
#include <QString>
#include <QTimer>

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
  // live_seconds: how long the demo run trains before the dashboard screenshot.
  ScreenshotTour(MainWindow* window, QString out_dir, int live_seconds, QObject* parent = nullptr);
  void start();

private:
  void save(QWidget* widget, const QString& name);
  void afterLive();      // main window + dashboard shots, then stop both runs
  void shootRunTabs();   // Samples, Checkpoints (two side by side) and Compare shots
  MainWindow* window_;
  QString out_dir_;
  int live_seconds_;
  EventLoopProbe* probe_ = nullptr;         // from the start of the run
  EventLoopProbe* steady_probe_ = nullptr;  // once its tab is open
};

}  // namespace ganpo::ui
