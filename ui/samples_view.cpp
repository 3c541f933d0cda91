#include "ui/samples_view.h"

#include <QComboBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QSlider>
#include <QSpinBox>
#include <QTableWidget>
#include <QToolButton>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "ui/sample_text_delegate.h"
#include "ui/store_worker.h"
#include "ui/word_diff.h"

namespace ganpo::ui {

// A spin box whose arrows move to the previous / next step that has samples, not by 1.
class SampleStepSpinBox : public QSpinBox {
public:
  using QSpinBox::QSpinBox;
  std::function<void(int)> on_step_by;
  bool can_go_back = false, can_go_forward = false;

  void stepBy(int steps) override {
    if (on_step_by) on_step_by(steps);
  }

protected:
  StepEnabled stepEnabled() const override {
    StepEnabled e = StepNone;
    if (can_go_back) e |= StepDownEnabled;
    if (can_go_forward) e |= StepUpEnabled;
    return e;
  }
};

namespace {

constexpr int kSpinMax = std::numeric_limits<int>::max();

// At most max_bytes of s, cut before a UTF-8 continuation byte, with a note of what was left out.
std::string shown_part(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut) + " … [" + std::to_string(s.size() - cut) + " more bytes]";
}

int64_t word_count(const std::string& s) {
  int64_t n = 0;
  bool in_word = false;
  for (char c : s) {
    const bool space = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

// Characters as a reader counts them: code points, an invalid byte counting as one U+FFFD.
int64_t char_count(const std::string& s) {
  const QString t = QString::fromUtf8(s.data(), static_cast<qsizetype>(s.size()));
  int64_t n = 0;
  for (QChar c : t)
    if (!c.isLowSurrogate()) ++n;
  return n;
}

QString score_text(double score) {
  if (!std::isfinite(score)) return QStringLiteral("-");  // no judge (an external judge's -1 is a score)
  return QString::number(score, 'g', 3);
}

QString footer(double score, const std::string& text) {
  const int64_t words = word_count(text), chars = char_count(text);
  return QStringLiteral("judge %1 · %2 %3 · %4 %5")
      .arg(score_text(score))
      .arg(words)
      .arg(words == 1 ? QStringLiteral("word") : QStringLiteral("words"))
      .arg(chars)
      .arg(chars == 1 ? QStringLiteral("char") : QStringLiteral("chars"));
}

// One row per prompt: the newest. A step sampled twice (Sample now at a step the schedule had
// just sampled, or pressed twice while paused) has two rows for each prompt; rows come ordered
// by prompt index, then id (RunStore::samples), so the last of each prompt is the newest.
std::vector<SampleRow> newest_per_prompt(std::vector<SampleRow> rows) {
  std::vector<SampleRow> out;
  for (SampleRow& r : rows) {
    if (!out.empty() && out.back().prompt_index == r.prompt_index)
      out.back() = std::move(r);
    else
      out.push_back(std::move(r));
  }
  return out;
}

QString plain_html(const std::string& text) { return diff_to_html({{DiffPiece::Same, text}}, false, false); }

QString plain_text(const std::string& text) { return QString::fromUtf8(text.data(), static_cast<qsizetype>(text.size())); }

}  // namespace

SamplesView::SamplesView(StoreWorker* store, int64_t run_id, QWidget* parent)
    : QWidget(parent), store_(store), run_id_(run_id) {
  play_button_ = new QToolButton(this);
  play_button_->setCheckable(true);
  play_button_->setText(QStringLiteral("▶ Play"));
  play_button_->setToolTip(QStringLiteral("Step through the sample steps, one every %1 s").arg(kPlayIntervalMs / 1000.0));
  play_button_->setToolButtonStyle(Qt::ToolButtonTextOnly);

  slider_ = new QSlider(Qt::Horizontal, this);
  slider_->setRange(0, 0);
  slider_->setPageStep(1);
  slider_->setTickPosition(QSlider::TicksBelow);
  slider_->setToolTip(QStringLiteral("The steps at which the run sampled its prompts"));

  spin_ = new SampleStepSpinBox(this);
  spin_->setPrefix(QStringLiteral("step "));
  spin_->setRange(0, kSpinMax);
  spin_->setKeyboardTracking(false);
  spin_->setMinimumWidth(spin_->fontMetrics().horizontalAdvance(QStringLiteral("step 0000000")) + 30);
  spin_->on_step_by = [this](int delta) { stepBy(delta); };

  range_label_ = new QLabel(this);

  mode_combo_ = new QComboBox(this);
  mode_combo_->addItem(QStringLiteral("diff: reference → policy"));
  mode_combo_->addItem(QStringLiteral("diff: step A → step k"));
  mode_combo_->addItem(QStringLiteral("no diff"));
  mode_combo_->setToolTip(
      QStringLiteral("Highlight removed words (red, struck through) and added words (green)"));

  compare_label_ = new QLabel(QStringLiteral("step A:"), this);
  compare_combo_ = new QComboBox(this);
  compare_combo_->setToolTip(QStringLiteral("The step whose policy text step k is compared with"));

  auto* controls = new QHBoxLayout;
  controls->addWidget(play_button_);
  controls->addWidget(slider_, 1);
  controls->addWidget(spin_);
  controls->addWidget(range_label_);
  controls->addSpacing(12);
  controls->addWidget(mode_combo_);
  controls->addWidget(compare_label_);
  controls->addWidget(compare_combo_);

  summary_label_ = new QLabel(this);
  summary_label_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  summary_label_->setWordWrap(true);

  table_ = new QTableWidget(0, ColumnCount, this);
  table_->setHorizontalHeaderLabels({QStringLiteral("prompt"), QStringLiteral("reference"), QStringLiteral("policy")});
  table_->setItemDelegate(new SampleTextDelegate(table_));
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->setVerticalScrollMode(QAbstractItemView::ScrollPerPixel);
  table_->setHorizontalScrollMode(QAbstractItemView::ScrollPerPixel);
  table_->setWordWrap(true);
  table_->verticalHeader()->setVisible(false);
  // Prompts are short; the two responses share the rest of the width.
  table_->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
  table_->horizontalHeader()->setSectionResizeMode(PromptColumn, QHeaderView::Interactive);
  table_->setColumnWidth(PromptColumn, 240);
  table_->horizontalHeader()->setDefaultAlignment(Qt::AlignLeft | Qt::AlignVCenter);
  connect(table_->horizontalHeader(), &QHeaderView::sectionResized, this, [this] { scheduleRowResize(); });

  auto* layout = new QVBoxLayout(this);
  layout->addLayout(controls);
  layout->addWidget(summary_label_);
  layout->addWidget(table_, 1);

  connect(slider_, &QSlider::valueChanged, this, [this](int v) { setIndex(v); });
  connect(spin_, QOverload<int>::of(&QSpinBox::valueChanged), this, [this](int v) { setStep(v); });
  connect(mode_combo_, QOverload<int>::of(&QComboBox::currentIndexChanged), this,
          [this](int i) { setDiffMode(static_cast<DiffMode>(i)); });
  connect(compare_combo_, QOverload<int>::of(&QComboBox::activated), this, [this](int i) {
    if (i >= 0) setCompareStep(compare_combo_->itemData(i).toLongLong());
  });
  connect(play_button_, &QToolButton::toggled, this, [this](bool on) { setPlaying(on); });

  poll_timer_.setInterval(kPollIntervalMs);
  connect(&poll_timer_, &QTimer::timeout, this, &SamplesView::pollNow);
  play_timer_.setInterval(kPlayIntervalMs);
  connect(&play_timer_, &QTimer::timeout, this, &SamplesView::onPlayTick);

  updateControls();
  summary_label_->setText(QStringLiteral("Loading samples…"));
  pollNow();
}

void SamplesView::setLive(bool live) {
  if (live == poll_timer_.isActive()) return;
  if (live) {
    poll_timer_.start();
  } else {
    poll_timer_.stop();
  }
  pollNow();  // at once when going live; and whatever was written last when stopping
}

void SamplesView::pollNow() {
  if (steps_in_flight_ || !store_) return;
  steps_in_flight_ = true;
  const int64_t run = run_id_;
  store_->query<std::vector<std::pair<int64_t, int64_t>>>(
      this, [run](RunStore& s) { return s.sample_step_versions(run); },
      [this](std::vector<std::pair<int64_t, int64_t>> versions) {
        steps_in_flight_ = false;
        onSteps(std::move(versions));
      },
      [this](QString message) {
        steps_in_flight_ = false;
        summary_label_->setText(QStringLiteral("Could not read samples: %1").arg(message));
      });
}

void SamplesView::onSteps(std::vector<std::pair<int64_t, int64_t>> versions) {
  std::vector<int64_t> steps;
  std::map<int64_t, int64_t> newest_row;
  for (const auto& [step, row] : versions) {
    steps.push_back(step);
    newest_row[step] = row;
  }
  // A rewound run drops steps, and a resumed one writes a step's samples again (new rows): the
  // cached samples of either are stale.
  bool evicted = false;
  for (auto it = cache_.begin(); it != cache_.end();) {
    const auto found = newest_row.find(it->first);
    int64_t cached_newest = 0;
    for (const SampleRow& r : it->second) cached_newest = std::max(cached_newest, r.id);
    const bool stale = found == newest_row.end() || found->second != cached_newest;
    evicted = evicted || stale;
    it = stale ? cache_.erase(it) : std::next(it);
  }
  if (steps == steps_) {
    if (steps_.empty()) summary_label_->setText(QStringLiteral("No samples yet: the run samples its prompts every few steps."));
    if (evicted) showCurrent();
    return;
  }
  const bool follow = index_ < 0 || index_ == static_cast<int>(steps_.size()) - 1;
  const int64_t old_step = currentStep();
  steps_ = std::move(steps);
  if (steps_.empty()) {
    index_ = -1;
  } else if (follow) {
    index_ = static_cast<int>(steps_.size()) - 1;
  } else {
    index_ = indexNearest(old_step);
  }
  Q_EMIT stepsChanged(static_cast<int>(steps_.size()));
  showCurrent();
}

int SamplesView::indexNearest(int64_t step) const {
  if (steps_.empty()) return -1;
  const auto it = std::lower_bound(steps_.begin(), steps_.end(), step);
  if (it == steps_.end()) return static_cast<int>(steps_.size()) - 1;
  const int i = static_cast<int>(it - steps_.begin());
  if (*it == step || i == 0) return i;
  return (step - steps_[i - 1] <= *it - step) ? i - 1 : i;  // ties go to the earlier step
}

int64_t SamplesView::currentStep() const { return index_ >= 0 ? steps_[index_] : -1; }

void SamplesView::setStep(int64_t step) { setIndex(indexNearest(step)); }

void SamplesView::setIndex(int index) {
  if (steps_.empty()) return;
  index = std::clamp(index, 0, static_cast<int>(steps_.size()) - 1);
  if (index == index_) {
    updateControls();  // a typed step snapped back to the one shown
    return;
  }
  index_ = index;
  showCurrent();
}

void SamplesView::stepBy(int delta) {
  if (index_ >= 0) setIndex(index_ + delta);
}

int SamplesView::rowCount() const { return table_->rowCount(); }

void SamplesView::setDiffMode(DiffMode mode) {
  if (mode == mode_) return;
  mode_ = mode;
  showCurrent();
}

void SamplesView::setCompareStep(int64_t step) {
  const int i = indexNearest(step);
  compare_step_ = i >= 0 ? steps_[i] : step;
  showCurrent();
}

int64_t SamplesView::compareStep() const { return effectiveCompareStep(); }

int64_t SamplesView::effectiveCompareStep() const {
  if (index_ < 0) return -1;
  if (compare_step_ >= 0 && std::binary_search(steps_.begin(), steps_.end(), compare_step_)) return compare_step_;
  return steps_[std::max(0, index_ - 1)];
}

void SamplesView::setPlaying(bool playing) {
  if (playing == play_timer_.isActive()) return;
  if (playing) {
    if (steps_.size() < 2) {
      updateControls();
      return;
    }
    if (index_ == static_cast<int>(steps_.size()) - 1) setIndex(0);  // play again from the start
    play_timer_.start();
  } else {
    play_timer_.stop();
  }
  updateControls();
}

void SamplesView::onPlayTick() {
  if (index_ < 0 || shown_step_ != currentStep()) return;  // wait for the step's samples
  if (index_ + 1 < static_cast<int>(steps_.size())) setIndex(index_ + 1);
  if (index_ + 1 >= static_cast<int>(steps_.size())) setPlaying(false);
}

void SamplesView::updateControls() {
  const bool any = !steps_.empty();
  const QSignalBlocker b1(slider_), b2(spin_), b3(play_button_), b4(compare_combo_), b5(mode_combo_);
  mode_combo_->setCurrentIndex(static_cast<int>(mode_));
  slider_->setEnabled(steps_.size() > 1);
  slider_->setRange(0, any ? static_cast<int>(steps_.size()) - 1 : 0);
  slider_->setValue(std::max(0, index_));
  spin_->setEnabled(any);
  spin_->setValue(static_cast<int>(std::clamp<int64_t>(std::max<int64_t>(0, currentStep()), 0, kSpinMax)));
  spin_->can_go_back = index_ > 0;
  spin_->can_go_forward = any && index_ + 1 < static_cast<int>(steps_.size());
  range_label_->setText(any ? QStringLiteral("%1 of %2 sample steps").arg(index_ + 1).arg(steps_.size())
                            : QStringLiteral("no sample steps yet"));
  play_button_->setEnabled(steps_.size() > 1);
  play_button_->setChecked(play_timer_.isActive());
  play_button_->setText(play_timer_.isActive() ? QStringLiteral("❚❚ Pause") : QStringLiteral("▶ Play"));

  const bool step_mode = mode_ == DiffMode::StepToStep;
  compare_label_->setVisible(step_mode);
  compare_combo_->setVisible(step_mode);
  if (compare_combo_->count() != static_cast<int>(steps_.size()) ||
      (any && compare_combo_->itemData(compare_combo_->count() - 1).toLongLong() != steps_.back())) {
    compare_combo_->clear();
    for (int64_t s : steps_) compare_combo_->addItem(QString::number(s), QVariant::fromValue<qlonglong>(s));
  }
  const int64_t a = effectiveCompareStep();
  if (a >= 0) compare_combo_->setCurrentIndex(indexNearest(a));
  table_->horizontalHeaderItem(PolicyColumn)
      ->setText(any ? QStringLiteral("policy @ step %1").arg(currentStep()) : QStringLiteral("policy"));
}

void SamplesView::showCurrent() {
  updateControls();
  if (index_ < 0) {
    table_->setRowCount(0);
    shown_step_ = -1;
    summary_label_->setText(QStringLiteral("No samples yet: the run samples its prompts every few steps."));
    return;
  }
  const int64_t step = currentStep();
  bool ready = true;
  for (int64_t s : {step, mode_ == DiffMode::StepToStep ? effectiveCompareStep() : step}) {
    if (!cache_.count(s)) {
      request(s);
      ready = false;
    }
  }
  // Playing: fetch the next step while this one is on screen.
  if (play_timer_.isActive() && index_ + 1 < static_cast<int>(steps_.size())) request(steps_[index_ + 1]);
  if (ready) render();
}

void SamplesView::request(int64_t step) {
  if (cache_.count(step) || pending_.count(step) || !store_) return;
  pending_.insert(step);
  const int64_t run = run_id_;
  store_->query<std::vector<SampleRow>>(
      this, [run, step](RunStore& s) { return s.samples(run, step); },
      [this, step](std::vector<SampleRow> rows) {
        pending_.erase(step);
        if (!std::binary_search(steps_.begin(), steps_.end(), step)) return;
        // Keep the cache small: a long run has many sample steps; the ones near k are kept.
        if (cache_.size() > 64) {
          const int64_t k = currentStep(), a = effectiveCompareStep();
          for (auto it = cache_.begin(); it != cache_.end();)
            it = (it->first == k || it->first == a) ? std::next(it) : cache_.erase(it);
        }
        cache_[step] = newest_per_prompt(std::move(rows));
        const int64_t k = currentStep();
        if (step == k || (mode_ == DiffMode::StepToStep && step == effectiveCompareStep())) showCurrent();
      },
      [this, step](QString message) {
        pending_.erase(step);
        summary_label_->setText(QStringLiteral("Could not read the samples of step %1: %2").arg(step).arg(message));
      });
}

void SamplesView::render() {
  const int64_t step = currentStep();
  const std::vector<SampleRow>& rows = cache_.at(step);
  std::map<int64_t, const SampleRow*> before;  // prompt index -> the policy at step A
  const int64_t a = effectiveCompareStep();
  if (mode_ == DiffMode::StepToStep) {
    for (const auto& r : cache_.at(a)) before[r.prompt_index] = &r;
  }

  table_->setRowCount(static_cast<int>(rows.size()));
  double policy_score_sum = 0, reference_score_sum = 0;
  int scored = 0;
  int64_t policy_words = 0, reference_words = 0;
  auto set_cell = [this](int row, int col, const QString& text, const QString& html, const QString& foot) {
    QTableWidgetItem* item = table_->item(row, col);
    if (!item) {
      item = new QTableWidgetItem;
      table_->setItem(row, col, item);
    }
    item->setText(text);
    item->setData(SampleTextDelegate::kHtmlRole, html);
    item->setData(SampleTextDelegate::kFooterRole, foot);
    item->setToolTip(foot);
  };
  for (int i = 0; i < static_cast<int>(rows.size()); ++i) {
    const SampleRow& r = rows[static_cast<size_t>(i)];
    const std::string ref = shown_part(r.reference_text, kMaxShownBytes);
    const std::string pol = shown_part(r.policy_text, kMaxShownBytes);
    QString ref_html, pol_html;
    if (mode_ == DiffMode::ReferenceToPolicy) {
      const auto pieces = word_diff(ref, pol);
      ref_html = diff_to_html(pieces, true, false);
      pol_html = diff_to_html(pieces, false, true);
    } else if (mode_ == DiffMode::StepToStep && before.count(r.prompt_index) && a != step) {
      ref_html = plain_html(ref);
      pol_html = diff_to_html(word_diff(shown_part(before[r.prompt_index]->policy_text, kMaxShownBytes), pol), true, true);
    } else {
      ref_html = plain_html(ref);
      pol_html = plain_html(pol);
    }
    const std::string prompt = shown_part(r.prompt, kMaxShownBytes);
    set_cell(i, PromptColumn, plain_text(r.prompt), plain_html(prompt), QStringLiteral("prompt %1").arg(r.prompt_index));
    set_cell(i, ReferenceColumn, plain_text(r.reference_text), ref_html, footer(r.reference_score, r.reference_text));
    set_cell(i, PolicyColumn, plain_text(r.policy_text), pol_html, footer(r.policy_score, r.policy_text));
    if (std::isfinite(r.policy_score) && std::isfinite(r.reference_score)) {
      policy_score_sum += r.policy_score;
      reference_score_sum += r.reference_score;
      ++scored;
    }
    policy_words += word_count(r.policy_text);
    reference_words += word_count(r.reference_text);
  }

  QString summary = QStringLiteral("step %1 · %2 prompts").arg(step).arg(rows.size());
  if (scored > 0) {
    summary += QStringLiteral(" · mean judge score: policy %1, reference %2")
                   .arg(score_text(policy_score_sum / scored), score_text(reference_score_sum / scored));
  } else {
    summary += QStringLiteral(" · no judge scores");
  }
  if (!rows.empty()) {
    const double n = static_cast<double>(rows.size());
    summary += QStringLiteral(" · mean length: policy %1 words, reference %2 words")
                   .arg(QString::number(static_cast<double>(policy_words) / n, 'f', 1),
                        QString::number(static_cast<double>(reference_words) / n, 'f', 1));
  }
  if (mode_ == DiffMode::StepToStep) summary += QStringLiteral(" · policy compared with step %1").arg(a);
  summary_label_->setText(summary);

  const bool new_step = shown_step_ != step;
  shown_step_ = step;
  table_->resizeRowsToContents();
  if (new_step) Q_EMIT stepShown(step);
}

void SamplesView::scheduleRowResize() {
  if (resize_scheduled_) return;
  resize_scheduled_ = true;
  QTimer::singleShot(0, this, [this] {
    resize_scheduled_ = false;
    table_->resizeRowsToContents();
  });
}

QString SamplesView::cellText(int row, Column column) const {
  const QTableWidgetItem* item = table_->item(row, column);
  return item ? item->text() : QString();
}

QString SamplesView::cellHtml(int row, Column column) const {
  const QTableWidgetItem* item = table_->item(row, column);
  return item ? item->data(SampleTextDelegate::kHtmlRole).toString() : QString();
}

QString SamplesView::cellFooter(int row, Column column) const {
  const QTableWidgetItem* item = table_->item(row, column);
  return item ? item->data(SampleTextDelegate::kFooterRole).toString() : QString();
}

QString SamplesView::summaryText() const { return summary_label_->text(); }

}  // namespace ganpo::ui
