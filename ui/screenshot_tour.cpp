#include "ui/screenshot_tour.h"

#include <time.h>

#include <QApplication>
#include <QDir>
#include <QPixmap>
#include <QPointer>
#include <QTableWidget>
#include <QTextStream>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "core/config.h"
#include "core/study_spec.h"
#include "ui/checkpoints_view.h"
#include "ui/compare_view.h"
#include "ui/dashboard_view.h"
#include "ui/run_list_model.h"
#include "ui/samples_view.h"
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

// Calls fn once ready() holds (checked every 250 ms), or after `seconds` regardless.
void ScreenshotTour::when(const std::function<bool()>& ready, int seconds, const std::function<void()>& fn) {
  auto* waiter = new QTimer(this);
  auto waited = std::make_shared<int>(0);
  connect(waiter, &QTimer::timeout, this, [waiter, waited, ready, seconds, fn] {
    if (!ready() && ++*waited < seconds * 4) return;
    waiter->stop();
    waiter->deleteLater();
    fn();
  });
  waiter->start(250);
}

RunStatus ScreenshotTour::statusOf(int64_t run_id) const {
  const RunListEntry* e = window_->runModel()->entry(run_id);
  return e ? e->row.status : RunStatus::queued;
}

void ScreenshotTour::start() {
  QDir().mkpath(out_dir_);
  window_->resize(1500, 900);
  // 1. The New Run dialog on the demo preset: a pipeline, SFT then DPO + GANPO.
  QTimer::singleShot(800, this, [this] {
    auto* dialog = new NewRunDialog(window_);
    dialog->selectPreset("demo");
    dialog->resize(900, 760);
    dialog->show();
    QTimer::singleShot(600, this, [this, dialog] {
      save(dialog, "new_run_dialog.png");
      const RunConfig config = dialog->config();
      dialog->close();
      dialog->deleteLater();
      // 2. The demo pipeline, and the same preference stage without GANPO to compare with: one
      // study, the SFT stage shared, both arms at once after it. The probe measures UI-thread
      // stalls meanwhile.
      StudySpec spec = study_of_pipeline(config);
      spec.grid = {{"ganpo.enabled", {"true", "false"}}};
      probe_ = new EventLoopProbe(this);
      window_->createAndStartStudy(spec, /*jobs=*/2, /*follow_runs=*/true);
      // Run 1 is the SFT stage, 2 the GANPO arm, 3 the DPO arm.
      when([this] { return statusOf(2) != RunStatus::queued; }, 600, [this] {
        window_->openRunTab(kGanpoRun);
        // A second probe once the run's tab is built: the steady state while curves stream in.
        QTimer::singleShot(1000, this, [this] { steady_probe_ = new EventLoopProbe(this); });
        QTimer::singleShot(live_seconds_ * 1000, this, [this] { afterLive(); });
      });
    });
  });
}

void ScreenshotTour::afterLive() {
  // A run's tab reads its metrics only while shown: its first read is awaited (up to 10 s) so the
  // shot shows the curves so far, not the empty tab of the moment it was brought forward.
  // The DPO twin overlaid on the GANPO arm's charts (dashed, in its run-list colour).
  const QPointer<RunTab> shown = window_->openRunTab(kGanpoRun);
  if (shown) shown->dashboard()->addOverlay(kDpoRun);
  when([shown] {
    return !shown || (shown->dashboard()->pointsLoaded() > 0 && shown->dashboard()->overlayPointsLoaded(kDpoRun) > 0);
  }, 10, [this] { shootLive(); });
}

void ScreenshotTour::shootLive() {
  save(window_, "main_window.png");
  RunTab* tab = window_->runTab(kGanpoRun);
  if (tab) {
    save(tab, "dashboard.png");
    std::printf("dashboard points loaded: %lld; health: %s\n", static_cast<long long>(tab->dashboard()->pointsLoaded()),
                qPrintable(tab->dashboard()->healthText()));
  }
  std::printf("UI thread, including opening the run's tab: longest event handled in %.1f ms of CPU, "
              "timer lateness %.1f ms\n",
              probe_->longestBusyCpuMs(), probe_->longestStallMs());
  if (steady_probe_)
    std::printf("UI thread while the live run streamed (%lld timer ticks): longest event handled in "
                "%.1f ms of CPU [%s], timer lateness %.1f ms (the workers train on the same cores)\n",
                static_cast<long long>(steady_probe_->ticks()), steady_probe_->longestBusyCpuMs(),
                qPrintable(steady_probe_->longestEvent()), steady_probe_->longestStallMs());
  std::fflush(stdout);
  // Once both arms have finished (their final evaluations included): the trained models' tabs.
  when([this] { return is_finished(statusOf(kGanpoRun)) && is_finished(statusOf(kDpoRun)); }, 900,
       [this] { shootRunTabs(); });
}

void ScreenshotTour::shootRunTabs() {
  RunTab* tab = window_->openRunTab(kGanpoRun);
  tab->setCurrentWidget(tab->samples());
  QTimer::singleShot(2500, this, [this, tab] {
    save(tab, "samples.png");
    tab->setCurrentWidget(tab->checkpoints());
    CheckpointsView* cv = tab->checkpoints();
    cv->refresh();
    QTimer::singleShot(2500, this, [this, tab, cv] {
      QStringList dirs;
      for (int row = 0; row < cv->table()->rowCount() && dirs.size() < 2; ++row) {
        const QString dir = cv->table()->item(row, cv->table()->columnCount() - 1)
                                ? cv->table()->item(row, cv->table()->columnCount() - 1)->text()
                                : QString();
        if (dir.contains("checkpoint-")) dirs << dir;
      }
      cv->pickFolders(dirs);
      if (!cv->samplePrompts().isEmpty()) cv->setPrompt(cv->samplePrompts().front());
      cv->setSampling(0.7, 1.0, 48, 7);
      QElapsedTimer* clock = new QElapsedTimer;
      clock->start();
      auto done = [this, tab, clock] {
        std::printf("checkpoints tab: generated with %lld models in %.2f s\n",
                    static_cast<long long>(tab->checkpoints()->pickedFolders().size()), clock->elapsed() / 1000.0);
        delete clock;
        QTimer::singleShot(500, this, [this, tab] {
          save(tab, "checkpoints.png");
          if (CompareView* compare = window_->openCompareTab({kGanpoRun, kDpoRun})) {
            QTimer::singleShot(3000, this, [this, compare] {
              save(compare, "compare.png");
              window_->setCloseChoice(MainWindow::CloseChoice::LeaveRunning);
              QTimer::singleShot(500, qApp, &QApplication::quit);
            });
          } else {
            QTimer::singleShot(500, qApp, &QApplication::quit);
          }
        });
      };
      connect(cv, &CheckpointsView::generationFinished, this, done, Qt::SingleShotConnection);
      if (!cv->generateNow()) {
        std::printf("checkpoints tab: could not generate (%s)\n", qPrintable(cv->statusText()));
        done();
      }
    });
  });
}


}  // namespace ganpo::ui
