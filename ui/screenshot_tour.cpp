#include "ui/screenshot_tour.h"

#include <time.h>

#include <QApplication>
#include <QDir>
#include <QPixmap>
#include <QTextStream>

#include <algorithm>
#include <cstdio>

#include "core/config.h"
#include "ui/dashboard_view.h"
#include "ui/main_window.h"
#include "ui/new_run_dialog.h"
#include "ui/run_tab.h"

namespace ganpo::ui {

namespace {

double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

}  // namespace

EventLoopProbe::EventLoopProbe(QObject* parent) : QObject(parent) {
  // Every event of the UI thread passes this filter: the thread CPU time between two events is
  // what handling the earlier one cost (waiting for the next event costs no CPU).
  qApp->installEventFilter(this);
  timer_.setTimerType(Qt::PreciseTimer);
  timer_.setInterval(5);
  connect(&timer_, &QTimer::timeout, this, [this] {
    const qint64 now = clock_.elapsed();
    const double late = static_cast<double>(now - last_ms_ - timer_.interval());
    if (ticks_ > 0 && late > longest_ms_) longest_ms_ = late;
    last_ms_ = now;
    ++ticks_;
  });
  clock_.start();
  timer_.start();
}

bool EventLoopProbe::eventFilter(QObject* watched, QEvent* event) {
  const double now = thread_cpu_ms();
  if (last_event_cpu_ms_ >= 0 && now - last_event_cpu_ms_ > longest_busy_ms_) {
    longest_busy_ms_ = now - last_event_cpu_ms_;
    longest_event_ = last_event_;
  }
  last_event_cpu_ms_ = now;
  last_event_ = QString("%1 (%2)").arg(watched ? watched->metaObject()->className() : "?").arg(int(event->type()));
  return false;
}

ScreenshotTour::ScreenshotTour(MainWindow* window, QString out_dir, int live_seconds, QObject* parent)
    : QObject(parent), window_(window), out_dir_(std::move(out_dir)), live_seconds_(live_seconds) {}

void ScreenshotTour::save(QWidget* widget, const QString& name) {
  const QString path = QDir(out_dir_).filePath(name);
  if (!widget->grab().save(path)) std::fprintf(stderr, "could not write %s\n", qPrintable(path));
  std::printf("screenshot %s\n", qPrintable(path));
  std::fflush(stdout);
}

void ScreenshotTour::start() {
  QDir().mkpath(out_dir_);
  window_->resize(1500, 900);
  // 1. The New Run dialog on the demo preset.
  QTimer::singleShot(800, this, [this] {
    auto* dialog = new NewRunDialog(window_);
    dialog->selectPreset("demo");
    dialog->resize(900, 720);
    dialog->show();
    QTimer::singleShot(600, this, [this, dialog] {
      save(dialog, "new_run_dialog.png");
      const RunConfig config = dialog->config();
      dialog->close();
      dialog->deleteLater();
      // 2. Start it and watch it train; the probe measures UI-thread stalls meanwhile.
      probe_ = new EventLoopProbe(this);
      window_->createAndStartRun(config);
      // A second probe once the run's tab is built: the steady state while curves stream in.
      QTimer::singleShot(5000, this, [this] { steady_probe_ = new EventLoopProbe(this); });
      QTimer::singleShot(live_seconds_ * 1000, this, [this] {
        save(window_, "main_window.png");
        for (QWidget* w : window_->findChildren<RunTab*>()) {
          save(w, "dashboard.png");
          auto* tab = static_cast<RunTab*>(w);
          std::printf("dashboard points loaded: %lld; health: %s\n",
                      static_cast<long long>(tab->dashboard()->pointsLoaded()),
                      qPrintable(tab->dashboard()->healthText()));
          window_->sendControl(tab->runId(), "stop");
        }
        std::printf("UI thread, including opening the run's tab: longest event handled in %.1f ms of CPU, "
                    "timer lateness %.1f ms\n",
                    probe_->longestBusyCpuMs(), probe_->longestStallMs());
        if (steady_probe_)
          std::printf("UI thread while the live run streamed (from 5 s on, %lld timer ticks): longest event-loop "
                      "pass %.1f ms of CPU [%s], timer lateness %.1f ms (the worker trains on the same cores)\n",
                      static_cast<long long>(steady_probe_->ticks()), steady_probe_->longestBusyCpuMs(),
                      qPrintable(steady_probe_->longestEvent()), steady_probe_->longestStallMs());
        std::fflush(stdout);
        window_->setCloseChoice(MainWindow::CloseChoice::LeaveRunning);
        QTimer::singleShot(1500, qApp, &QApplication::quit);
      });
    });
  });
}

}  // namespace ganpo::ui
