// LogView against real log files: a long log opens at its end, a line longer than a read chunk
// does not stop the view, and lines appended later arrive.
#include <gtest/gtest.h>

#include <QApplication>
#include <QFile>
#include <QScrollBar>
#include <QTemporaryDir>
#include <QTextBlock>
#include <QTextDocument>

#include "ui/log_view.h"

namespace ganpo::ui {
namespace {

void append(const QString& path, const QByteArray& bytes) {
  QFile f(path);
  ASSERT_TRUE(f.open(QIODevice::Append));
  f.write(bytes);
}

// A 6 MB log: the view opens on its last MiB from a line's start, says how much came before, and
// shows the last line (the end of a crashed run's log) at once, not after 6 MB of reads.
TEST(LogView, ALongLogOpensAtItsEnd) {
  QTemporaryDir dir;
  const QString path = dir.filePath("run-1.log");
  QByteArray text;
  for (int i = 0; text.size() < 6'000'000; ++i)
    text += "2026-12-07 16:02:41 [info] step " + QByteArray::number(i) + " loss 0.693 accuracy 0.50 lr 5e-07\n";
  text += "error: the last line\n";
  append(path, text);
  LogView view(nullptr, 1, path);
  const QString shown = view.toPlainText();
  EXPECT_TRUE(shown.startsWith("[... ")) << shown.left(120).toStdString();
  EXPECT_TRUE(shown.contains(" MB of this log before this line: " + path)) << shown.left(200).toStdString();
  EXPECT_TRUE(shown.endsWith("error: the last line")) << shown.right(120).toStdString();
  EXPECT_TRUE(view.document()->findBlockByNumber(1).text().startsWith("2026-12-07")) << "from a line's start";
}

// A line longer than a read (1 MiB without a newline) used to stop the view for good: it waited
// for the newline that the chunk could not hold. It is shown in pieces, cut between characters
// (a 3-byte "€" line, whose 1 MiB reads would split one), and what follows arrives.
TEST(LogView, ALineLongerThanAReadDoesNotStopTheView) {
  QTemporaryDir dir;
  const QString path = dir.filePath("run-2.log");
  append(path, "first\n");
  LogView view(nullptr, 2, path);
  append(path, QByteArray("\xE2\x82\xAC").repeated(500'000) + "\nafter the long line\n");  // written while it follows
  for (int i = 0; i < 4; ++i) view.refresh();
  EXPECT_TRUE(view.toPlainText().endsWith("after the long line")) << view.toPlainText().right(80).toStdString();
  EXPECT_EQ(view.toPlainText().count(QChar(0x20AC)), 500'000);
  EXPECT_EQ(view.toPlainText().count(QChar(QChar::ReplacementCharacter)), 0);
  append(path, "appended later\n");
  view.refresh();
  EXPECT_TRUE(view.toPlainText().endsWith("appended later"));
}

// A log whose last line is long (a traceback, a config dump) opens at its first column, where
// every line starts; it opened scrolled to the far right of that last line.
TEST(LogView, ALongLastLineLeavesTheViewAtTheFirstColumn) {
  QTemporaryDir dir;
  const QString path = dir.filePath("run-3.log");
  append(path, "step 1 loss 0.69\nconfig: " + QByteArray("x").repeated(5000) + "\n");
  LogView view(nullptr, 3, path);
  view.resize(400, 200);
  view.show();
  QApplication::processEvents();
  ASSERT_GT(view.horizontalScrollBar()->maximum(), 0);
  EXPECT_EQ(view.horizontalScrollBar()->value(), 0);
  // A reader who scrolled across stays where they are as lines arrive.
  view.horizontalScrollBar()->setValue(200);
  append(path, "step 2 " + QByteArray("y").repeated(5000) + "\n");
  view.refresh();
  EXPECT_EQ(view.horizontalScrollBar()->value(), 200);
}

}  // namespace
}  // namespace ganpo::ui
