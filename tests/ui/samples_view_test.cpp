// The Samples tab: the word diff on known inputs (identical, changed, inserted and deleted words,
// punctuation, empty sides, invalid UTF-8, a 10,000-word text), its HTML (escaped, coloured), and
// the live view against a real temporary workspace: the step slider picks the rows of its step,
// the diff modes, Play, and a live view following a new sample step. The screenshots show the
// table (saved to $GANPO_SCREENSHOT_DIR when that is set).
#include <gtest/gtest.h>

#include <QApplication>
#include <QComboBox>
#include <QHelpEvent>
#include <QImage>
#include <QSlider>
#include <QTableWidget>
#include <QToolTip>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <cstdio>
#include <string>
#include <vector>

#include "dashboard_test_support.h"
#include "screenshot_test_support.h"
#include "ui/sample_text_delegate.h"
#include "ui/samples_view.h"
#include "ui/store_worker.h"
#include "ui/word_diff.h"

using namespace ganpo;
using namespace ganpo::ui;
using ganpo::ui::testing::pump_until;
using ganpo::ui::testing::save_for_review;
using ganpo::ui::testing::shows_content;
using ganpo::ui::testing::TempWorkspace;

namespace {

// Same + Removed pieces spell a; Same + Added pieces spell b.
void expect_spells(const std::vector<DiffPiece>& pieces, const std::string& a, const std::string& b) {
  EXPECT_EQ(diff_side_text(pieces, true, false), a);
  EXPECT_EQ(diff_side_text(pieces, false, true), b);
}

std::string kinds(const std::vector<DiffPiece>& pieces) {
  std::string s;
  for (const auto& p : pieces) s += p.kind == DiffPiece::Same ? '=' : p.kind == DiffPiece::Removed ? '-' : '+';
  return s;
}

std::vector<DiffPiece> changed(const std::vector<DiffPiece>& pieces) {
  std::vector<DiffPiece> out;
  for (const auto& p : pieces)
    if (p.kind != DiffPiece::Same) out.push_back(p);
  return out;
}

// What the workspace reads for a sample no judge scored.
constexpr double kNoScore = std::numeric_limits<double>::quiet_NaN();

SampleRow sample(int64_t index, const std::string& prompt, const std::string& reference, const std::string& policy,
                 double reference_score = kNoScore, double policy_score = kNoScore) {
  SampleRow r;
  r.prompt_index = index;
  r.prompt = prompt;
  r.reference_text = reference;
  r.policy_text = policy;
  r.reference_score = reference_score;
  r.policy_score = policy_score;
  return r;
}

// Three prompts sampled at one step; the policy text says which step it came from.
std::vector<SampleRow> samples_at(int64_t step) {
  const std::string s = std::to_string(step);
  return {sample(0, "Write a word that rhymes with cat.", "hat", "policy " + s + " says bat", 0.5, 0.25 + step / 400.0),
          sample(1, "List three colours.", "red, green and blue", "red, green and yellow at step " + s, 0.5,
                 0.5 + step / 400.0),
          sample(2, "Say hello <politely> & briefly.", "Hello there.", "Hello there, friend (step " + s + ").", 0.75,
                 0.75)};
}

}  // namespace

TEST(WordDiff, IdenticalTextsAreOneSamePiece) {
  const std::string t = "The quick brown fox, jumping.";
  const auto d = word_diff(t, t);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].kind, DiffPiece::Same);
  EXPECT_EQ(d[0].text, t);
}

TEST(WordDiff, OneChangedWord) {
  const std::string a = "the cat sat on the mat", b = "the dog sat on the mat";
  const auto d = word_diff(a, b);
  EXPECT_EQ(kinds(d), "=-+=");
  EXPECT_EQ(d[0].text, "the ");
  EXPECT_EQ(d[1].text, "cat");
  EXPECT_EQ(d[2].text, "dog");
  EXPECT_EQ(d[3].text, " sat on the mat");
  expect_spells(d, a, b);
}

TEST(WordDiff, InsertionAndDeletion) {
  const std::string a = "the cat sat", b = "the black cat sat";
  const auto ins = word_diff(a, b);
  EXPECT_EQ(kinds(ins), "=+=");
  ASSERT_EQ(changed(ins).size(), 1u);
  EXPECT_EQ(changed(ins)[0].text.find("black"), 0u);
  expect_spells(ins, a, b);

  const auto del = word_diff(b, a);
  EXPECT_EQ(kinds(del), "=-=");
  EXPECT_EQ(changed(del)[0].text.find("black"), 0u);
  expect_spells(del, b, a);
}

TEST(WordDiff, PunctuationIsItsOwnToken) {
  const std::string a = "Hello, world.", b = "Hello; world!";
  const auto d = word_diff(a, b);
  expect_spells(d, a, b);
  const auto c = changed(d);
  ASSERT_EQ(c.size(), 4u);
  EXPECT_EQ(c[0].text, ",");
  EXPECT_EQ(c[1].text, ";");
  EXPECT_EQ(c[2].text, ".");
  EXPECT_EQ(c[3].text, "!");
  // "world" stays Same although its neighbours changed.
  EXPECT_NE(d[0].text.find("Hello"), std::string::npos);
}

TEST(WordDiff, WholePhraseReplacedReadsAsOneChange) {
  const auto d = word_diff("a b c", "x y z");
  EXPECT_EQ(kinds(d), "-+");
  EXPECT_EQ(d[0].text, "a b c");
  EXPECT_EQ(d[1].text, "x y z");
}

TEST(WordDiff, EmptySides) {
  EXPECT_TRUE(word_diff("", "").empty());
  const auto add = word_diff("", "new text");
  ASSERT_EQ(add.size(), 1u);
  EXPECT_EQ(add[0].kind, DiffPiece::Added);
  EXPECT_EQ(add[0].text, "new text");
  const auto rem = word_diff("old text", "");
  ASSERT_EQ(rem.size(), 1u);
  EXPECT_EQ(rem[0].kind, DiffPiece::Removed);
  EXPECT_EQ(rem[0].text, "old text");
}

TEST(WordDiff, InvalidUtf8BytesNeverCrashAndRenderAsReplacement) {
  const std::string a = std::string("ab\xff\xfe cd \xc3") + std::string(1, '\0') + "x \xe2\x82";
  const std::string b = std::string("ab\xff cd \xc3\xa9 x\x01 \xf0\x9f\x98\x80 end");
  const auto d = word_diff(a, b);
  expect_spells(d, a, b);
  const QString html = diff_to_html(d, true, true);
  EXPECT_TRUE(html.contains(QChar(QChar::ReplacementCharacter)));
  EXPECT_TRUE(html.contains(QString::fromUtf8("\xc3\xa9")));           // é stays whole
  EXPECT_TRUE(html.contains(QString::fromUtf8("\xf0\x9f\x98\x80")));   // so does an emoji
  EXPECT_FALSE(html.contains(QChar(0)));
  EXPECT_FALSE(html.contains(QChar(1)));
  // Every byte value, both ways.
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  expect_spells(word_diff(all, "plain"), all, "plain");
  expect_spells(word_diff("plain", all), "plain", all);
  EXPECT_FALSE(diff_to_html(word_diff(all, all + all), true, true).isEmpty());
}

TEST(WordDiff, TenThousandWordsFinishAndAreCorrectAtTheEnds) {
  std::string a, b;
  for (int i = 0; i < 10000; ++i) {
    const std::string w = "w" + std::to_string(i);
    a += w + " ";
    // Scattered changes: too many differing words in between for the LCS cap.
    b += (i % 97 == 5 ? "X" + std::to_string(i) : w) + " ";
  }
  a = "start " + a + "end.";
  b = "start " + b + "finish.";
  const auto t0 = std::chrono::steady_clock::now();
  const auto d = word_diff(a, b);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  RecordProperty("word_diff_10k_ms", std::to_string(ms));
  std::printf("word_diff of 2 x 10,000 words: %.1f ms\n", ms);
  expect_spells(d, a, b);
  ASSERT_GE(d.size(), 2u);
  EXPECT_EQ(d.front().kind, DiffPiece::Same);
  EXPECT_EQ(d.front().text.rfind("start w0 w1 w2 w3 w4 ", 0), 0u);
  EXPECT_EQ(d.back().kind, DiffPiece::Same);  // the final "."
  EXPECT_EQ(d.back().text, ".");

  // The same words ten to a line: the lines that differ are marked, the others stay Same.
  std::string la, lb;
  for (int i = 0; i < 10000; ++i) {
    const std::string w = "w" + std::to_string(i), sep = i % 10 == 9 ? "\n" : " ";
    la += w + sep;
    lb += (i % 97 == 5 ? "X" + std::to_string(i) : w) + sep;
  }
  const auto lines = word_diff(la, lb);
  expect_spells(lines, la, lb);
  size_t removed_lines = 0;
  for (const auto& p : lines)
    if (p.kind == DiffPiece::Removed) removed_lines += static_cast<size_t>(std::count(p.text.begin(), p.text.end(), '\n'));
  EXPECT_LE(removed_lines, 104u);  // 104 changed words, each on one line
  EXPECT_GE(removed_lines, 100u);

  // One changed word in the middle of 10,000: an exact diff (prefix / suffix set aside).
  std::string c = a;
  const size_t at = c.find(" w5000 ");
  c.replace(at, 7, " CHANGED ");
  const auto one = word_diff(a, c);
  EXPECT_EQ(kinds(one), "=-+=");
  EXPECT_EQ(one[1].text, "w5000");
  EXPECT_EQ(one[2].text, "CHANGED");
  expect_spells(one, a, c);
}

TEST(WordDiff, HtmlEscapesAndMarksChanges) {
  const auto d = word_diff("a <b> & c", "a <i> & c \"q\"");
  const QString both = diff_to_html(d, true, true);
  EXPECT_FALSE(both.contains("<b>"));
  EXPECT_FALSE(both.contains("<i>"));
  EXPECT_TRUE(both.contains("&lt;"));
  EXPECT_TRUE(both.contains("&gt;"));
  EXPECT_TRUE(both.contains("&amp;"));
  EXPECT_TRUE(both.contains("line-through"));
  // Each side alone: only its own marks.
  const QString ref = diff_to_html(d, true, false), pol = diff_to_html(d, false, true);
  EXPECT_TRUE(ref.contains("line-through"));
  EXPECT_FALSE(pol.contains("line-through"));
  EXPECT_TRUE(pol.contains("#c9f2d2"));
  EXPECT_FALSE(ref.contains("#c9f2d2"));
  EXPECT_FALSE(diff_to_html(d, false, false).contains("span"));
}

TEST(SamplesView, StepSliderPicksTheRowsOfItsStep) {
  TempWorkspace ws;
  for (int64_t step : {0, 40, 80}) ws.store->add_samples(ws.run, step, samples_at(step));
  StoreWorker worker(QString::fromStdString(ws.path));
  SamplesView view(&worker, ws.run);
  view.resize(1100, 600);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 80; }));
  EXPECT_EQ(view.steps(), (std::vector<int64_t>{0, 40, 80}));
  EXPECT_EQ(view.currentStep(), 80);
  ASSERT_EQ(view.rowCount(), 3);
  EXPECT_EQ(view.cellText(0, SamplesView::PolicyColumn), "policy 80 says bat");
  EXPECT_EQ(view.cellText(0, SamplesView::ReferenceColumn), "hat");
  EXPECT_EQ(view.cellText(2, SamplesView::PromptColumn), "Say hello <politely> & briefly.");
  EXPECT_TRUE(view.cellHtml(2, SamplesView::PromptColumn).contains("&lt;politely&gt; &amp;"));
  // Scores and lengths in the footers; "-" where the judge gave none is covered below.
  EXPECT_EQ(view.cellFooter(0, SamplesView::PolicyColumn), QString::fromUtf8("judge 0.45 · 4 words · 18 chars"));
  EXPECT_EQ(view.cellFooter(0, SamplesView::ReferenceColumn), QString::fromUtf8("judge 0.5 · 1 word · 3 chars"));
  // Reference -> policy: removed words in the reference cell, added ones in the policy cell.
  EXPECT_TRUE(view.cellHtml(1, SamplesView::ReferenceColumn).contains("line-through"));
  EXPECT_TRUE(view.cellHtml(1, SamplesView::PolicyColumn).contains("yellow at step 80</span>"));

  // The slider snaps to sample steps: its positions are the steps' indices.
  auto* slider = view.findChild<QSlider*>();
  ASSERT_NE(slider, nullptr);
  EXPECT_EQ(slider->maximum(), 2);
  slider->setValue(1);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 40; }));
  EXPECT_EQ(view.cellText(0, SamplesView::PolicyColumn), "policy 40 says bat");
  EXPECT_EQ(view.cellText(1, SamplesView::PolicyColumn), "red, green and yellow at step 40");

  // setStep snaps to the nearest step that has samples.
  view.setStep(3);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 0; }));
  EXPECT_EQ(view.cellText(0, SamplesView::PolicyColumn), "policy 0 says bat");
  EXPECT_EQ(slider->value(), 0);
  view.setStep(70);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 80; }));
  view.setStep(1000000);
  EXPECT_EQ(view.currentStep(), 80);

  // Step A -> step k: the policy text of step 40 compared with step 80.
  view.setDiffMode(SamplesView::DiffMode::StepToStep);
  view.setCompareStep(40);
  ASSERT_TRUE(pump_until([&] { return view.cellHtml(0, SamplesView::PolicyColumn).contains("line-through"); }));
  EXPECT_EQ(view.compareStep(), 40);
  const QString step_html = view.cellHtml(0, SamplesView::PolicyColumn);
  EXPECT_TRUE(step_html.contains(">40</span>"));
  EXPECT_TRUE(step_html.contains(">80</span>"));
  EXPECT_FALSE(view.cellHtml(0, SamplesView::ReferenceColumn).contains("span"));
  view.setDiffMode(SamplesView::DiffMode::None);
  EXPECT_FALSE(view.cellHtml(1, SamplesView::PolicyColumn).contains("span"));
  EXPECT_FALSE(view.cellHtml(1, SamplesView::ReferenceColumn).contains("span"));
  view.setDiffMode(SamplesView::DiffMode::ReferenceToPolicy);

  // Play runs from the first step to the last and stops there.
  view.setPlayInterval(20);
  view.setPlaying(true);
  EXPECT_TRUE(view.isPlaying());
  ASSERT_TRUE(pump_until([&] { return !view.isPlaying(); }));
  EXPECT_EQ(view.currentStep(), 80);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 80; }));

  const QImage shot = view.grab().toImage();
  EXPECT_TRUE(shows_content(shot, view.size()));
  // What the picture shows: step 80's three rows, the policy text of its first one.
  ASSERT_EQ(view.rowCount(), 3);
  EXPECT_EQ(view.cellText(0, SamplesView::PolicyColumn), "policy 80 says bat");
  EXPECT_EQ(slider->value(), 2);
  save_for_review(shot, "samples_view.png");
}

TEST(SamplesView, MissingJudgeScoresShowADash) {
  TempWorkspace ws;
  ws.store->add_samples(ws.run, 10, {sample(0, "p", "ref text", "policy text")});
  StoreWorker worker(QString::fromStdString(ws.path));
  SamplesView view(&worker, ws.run);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 10; }));
  EXPECT_EQ(view.cellFooter(0, SamplesView::PolicyColumn), QString::fromUtf8("judge - · 2 words · 11 chars"));
  EXPECT_TRUE(view.summaryText().contains("no judge scores"));
}

// An external judge prints any finite number: its -1 (and other negative scores) are scores,
// shown and averaged like the others; only a sample no judge scored shows "-". (-1 read as "no
// score": its footer said "judge -" and the mean left the row out, 0.333 for a mean of 0.)
TEST(SamplesView, AnExternalJudgesNegativeScoresAreShownAndAveraged) {
  TempWorkspace ws;
  ws.store->add_samples(ws.run, 10, {sample(0, "p0", "one two three", "a b c", -1, -1),
                                     sample(1, "p1", "one", "a", 0, 1), sample(2, "p2", "x", "y", -0.5, 0)});
  StoreWorker worker(QString::fromStdString(ws.path));
  SamplesView view(&worker, ws.run);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 10; }));
  EXPECT_EQ(view.cellFooter(0, SamplesView::PolicyColumn), QString::fromUtf8("judge -1 · 3 words · 5 chars"));
  EXPECT_EQ(view.cellFooter(0, SamplesView::ReferenceColumn), QString::fromUtf8("judge -1 · 3 words · 13 chars"));
  EXPECT_EQ(view.cellFooter(2, SamplesView::ReferenceColumn), QString::fromUtf8("judge -0.5 · 1 word · 1 char"));
  EXPECT_TRUE(view.summaryText().contains("mean judge score: policy 0, reference -0.5")) << view.summaryText().toStdString();
  // What the workspace keeps for a sample no judge scored is no number at all.
  const auto rows = ws.store->samples(ws.run, 10);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_DOUBLE_EQ(rows[0].policy_score, -1);
  ws.store->add_samples(ws.run, 20, {sample(0, "p0", "r", "q")});
  EXPECT_TRUE(std::isnan(ws.store->samples(ws.run, 20)[0].policy_score));
}

// A resumed run that redoes a step writes its samples again (the same step, new rows): the view
// shows the new ones at the next poll, not those it read before.
TEST(SamplesView, SamplesWrittenAgainForAStepReplaceTheOnesShown) {
  TempWorkspace ws;
  ws.store->add_samples(ws.run, 10, {sample(0, "p", "ref text", "the first policy text")});
  ws.store->add_samples(ws.run, 20, {sample(0, "p", "ref text", "step twenty")});
  StoreWorker worker(QString::fromStdString(ws.path));
  SamplesView view(&worker, ws.run);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 20; }));
  view.setStep(10);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 10; }));
  EXPECT_EQ(view.cellText(0, SamplesView::PolicyColumn), "the first policy text");
  ws.store->drop_redone_rows(ws.run, 10, /*evaluation=*/false, /*samples=*/true);
  ws.store->add_samples(ws.run, 10, {sample(0, "p", "ref text", "the policy text of the redone step")});
  view.pollNow();
  ASSERT_TRUE(pump_until([&] { return view.cellText(0, SamplesView::PolicyColumn) == "the policy text of the redone step"; }))
      << view.cellText(0, SamplesView::PolicyColumn).toStdString();
  EXPECT_EQ(view.steps(), (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(view.currentStep(), 10);
}

TEST(SamplesView, LiveViewFollowsNewStepsFromTheLastStep) {
  TempWorkspace ws;
  StoreWorker worker(QString::fromStdString(ws.path));
  SamplesView view(&worker, ws.run);
  view.setLive(true);
  ASSERT_TRUE(pump_until([&] { return view.summaryText().startsWith("No samples yet"); }));
  EXPECT_EQ(view.currentStep(), -1);
  EXPECT_EQ(view.rowCount(), 0);

  ws.store->add_samples(ws.run, 0, samples_at(0));
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 0; }));
  ws.store->add_samples(ws.run, 40, samples_at(40));
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 40; }));
  EXPECT_EQ(view.cellText(0, SamplesView::PolicyColumn), "policy 40 says bat");

  // Away from the last step, a new step does not pull the view along.
  view.setStep(0);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 0; }));
  ws.store->add_samples(ws.run, 80, samples_at(80));
  ASSERT_TRUE(pump_until([&] { return view.steps().size() == 3; }));
  // The view decides to follow or stay when the new step list arrives; one more poll, answered
  // and delivered, must not move it either.
  view.pollNow();
  worker.drain();
  QCoreApplication::processEvents();
  EXPECT_EQ(view.currentStep(), 0);
  EXPECT_EQ(view.steps(), (std::vector<int64_t>{0, 40, 80}));

  // Back at the last step, it follows.
  view.setStep(80);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 80; }));
  ws.store->add_samples(ws.run, 120, samples_at(120));
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 120; }));
  EXPECT_EQ(view.cellText(1, SamplesView::PolicyColumn), "red, green and yellow at step 120");
  EXPECT_EQ(view.rowCount(), 3);

  // Not live: no more polling. The poll timer is off, and once the last poll (sent when going
  // off) has been answered, a new step stays unseen until someone asks.
  view.setLive(false);
  EXPECT_FALSE(view.isLive());
  worker.drain();  // the last poll has run before the next step is written
  QCoreApplication::processEvents();
  ws.store->add_samples(ws.run, 160, samples_at(160));
  worker.drain();
  QCoreApplication::processEvents();
  EXPECT_EQ(view.currentStep(), 120);
  EXPECT_EQ(view.steps().size(), 4u);
  EXPECT_FALSE(view.isLive());
  // The step was there to be seen: an explicit poll finds it, and the view at the last step follows.
  view.pollNow();
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 160; }));
  EXPECT_EQ(view.steps().size(), 5u);
}

TEST(SamplesView, LongAndByteLevelSamplesWrapAndRender) {
  TempWorkspace ws;
  std::string long_ref, long_pol;
  for (int i = 0; i < 120; ++i) {
    long_ref += "word" + std::to_string(i) + (i % 25 == 24 ? "\n" : " ");
    long_pol += (i % 17 == 3 ? "other" : "word") + std::to_string(i) + (i % 25 == 24 ? "\n" : " ");
  }
  std::string huge(200000, 'a');
  ws.store->add_samples(ws.run, 5, {sample(0, "Continue the list.", long_ref, long_pol, 0.2, 0.9),
                                    sample(1, "bytes", "ok \xc3\xa9t\xc3\xa9", "ok \xc3\xa9t\xff\x01 \xe2\x82", 0.1, 0.3),
                                    sample(2, "huge", huge, huge + " b")});
  ws.store->add_samples(ws.run, 10, {sample(0, "Continue the list.", long_ref, long_ref + " done."),
                                     sample(1, "bytes", "ok", "ok"), sample(2, "huge", "x", "y")});
  StoreWorker worker(QString::fromStdString(ws.path));
  SamplesView view(&worker, ws.run);
  view.resize(1100, 700);
  view.show();
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 10; }));
  view.setStep(5);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 5; }));
  ASSERT_EQ(view.rowCount(), 3);
  EXPECT_TRUE(view.cellHtml(1, SamplesView::PolicyColumn).contains(QChar(QChar::ReplacementCharacter)));
  // A huge sample is cut for display; its length still counts the whole text.
  EXPECT_LT(view.cellHtml(2, SamplesView::ReferenceColumn).size(), 5000);
  EXPECT_TRUE(view.cellFooter(2, SamplesView::ReferenceColumn).contains("200000 chars"));
  EXPECT_GT(view.table()->rowHeight(0), view.table()->rowHeight(1));
  // The huge sample is cut above its footer (which stays in the cell), and its tooltip holds the
  // whole text shown and the footer (it held the footer alone).
  QTableWidget* table = view.table();
  const QModelIndex cut = table->model()->index(2, SamplesView::ReferenceColumn);
  table->scrollTo(cut);
  QApplication::processEvents();
  const QRect rect = table->visualRect(cut);
  EXPECT_EQ(rect.height(), SampleTextDelegate::kMaxHeight);
  QHelpEvent help(QEvent::ToolTip, rect.center(), table->viewport()->mapToGlobal(rect.center()));
  QApplication::sendEvent(table->viewport(), &help);
  EXPECT_GT(QToolTip::text().size(), 3000);
  EXPECT_TRUE(QToolTip::text().contains("200000 chars")) << QToolTip::text().left(200).toStdString();
  QToolTip::hideText();
  const QImage long_shot = view.grab().toImage();
  EXPECT_TRUE(shows_content(long_shot, view.size()));
  save_for_review(long_shot, "samples_view_long.png");
  view.setDiffMode(SamplesView::DiffMode::StepToStep);
  view.setStep(10);
  view.setCompareStep(5);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 10 && view.cellHtml(0, SamplesView::PolicyColumn).contains("span"); }));
  const auto combos = view.findChildren<QComboBox*>();
  ASSERT_FALSE(combos.isEmpty());
  EXPECT_TRUE(combos[0]->currentText().contains("step A"));
  const QImage steps_shot = view.grab().toImage();
  EXPECT_TRUE(shows_content(steps_shot, view.size()));
  EXPECT_NE(steps_shot, long_shot) << "step 10 against step 5 is drawn, not the old table";
  save_for_review(steps_shot, "samples_view_steps.png");
}

// "Sample now" at a step that the schedule has just sampled (or twice while paused) writes the
// step's samples again beside the first ones: the table shows each prompt once, the newest
// sample. It showed every prompt twice ("step 6 · 4 prompts" for 2) and averaged both.
TEST(SamplesView, AStepSampledTwiceShowsEachPromptOnceNewestFirst) {
  TempWorkspace ws;
  ws.store->add_samples(ws.run, 6, {sample(0, "p0", "ref 0", "first 0", 0.5, 0.5), sample(1, "p1", "ref 1", "first 1", 0.5, 0.5)});
  ws.store->add_samples(ws.run, 6, {sample(0, "p0", "ref 0", "second 0", 0.5, 1), sample(1, "p1", "ref 1", "second 1", 0.5, 1)});
  StoreWorker worker(QString::fromStdString(ws.path));
  SamplesView view(&worker, ws.run);
  ASSERT_TRUE(pump_until([&] { return view.shownStep() == 6; }));
  ASSERT_EQ(view.rowCount(), 2);
  EXPECT_EQ(view.cellText(0, SamplesView::PolicyColumn), "second 0");
  EXPECT_EQ(view.cellText(1, SamplesView::PolicyColumn), "second 1");
  EXPECT_TRUE(view.summaryText().startsWith("step 6 · 2 prompts")) << view.summaryText().toStdString();
  EXPECT_TRUE(view.summaryText().contains("mean judge score: policy 1,")) << view.summaryText().toStdString();
}
