// The Help menu: About names the build and the workspace's folders, the shortcuts list shows the
// window's actions with their keys, and the documentation is found.
#include <gtest/gtest.h>

#include <QAction>
#include <QLabel>
#include <QMenu>
#include <QMenuBar>
#include <QTemporaryDir>

#include "core/build_info.h"
#include "ui/help_menu.h"
#include "ui/main_window.h"
#include "tests/ui/screenshot_test_support.h"

namespace ganpo::ui {
namespace {
using namespace ganpo::ui::testing;

TEST(HelpMenu, TheWindowHasAboutShortcutsAndDocumentation) {
  QTemporaryDir dir;
  ASSERT_TRUE(dir.isValid());
  const QString workspace = dir.filePath("ws.sqlite");
  MainWindow window(workspace);
  QMenu* help = nullptr;
  for (QAction* a : window.menuBar()->actions())
    if (a->menu() && a->text().remove('&') == "Help") help = a->menu();
  ASSERT_NE(help, nullptr);
  QStringList items;
  for (QAction* a : help->actions())
    if (!a->isSeparator()) items << a->text().remove('&');
  EXPECT_EQ(items, (QStringList{"Documentation", "Keyboard Shortcuts", "About GANPO Workbench"}));

  const QString about = about_text(workspace);
  EXPECT_TRUE(about.contains(QString::fromStdString(project_version()))) << about.toStdString();
  EXPECT_TRUE(about.contains(QString::fromStdString(git_commit()))) << about.toStdString();
  EXPECT_TRUE(about.contains("LibTorch")) << about.toStdString();
  EXPECT_TRUE(about.contains(workspace)) << about.toStdString();
  EXPECT_TRUE(about.contains(dir.filePath("logs"))) << about.toStdString();
  EXPECT_TRUE(about.contains(dir.filePath("runs"))) << about.toStdString();

  QList<QAction*> actions;
  for (QAction* a : window.findChildren<QAction*>())
    if (a->text() == "New Run" || a->text() == "Start") actions << a;
  const QString keys = shortcuts_text(actions);
  EXPECT_TRUE(keys.contains("New Run") && keys.contains("Start")) << keys.toStdString();
  EXPECT_TRUE(keys.contains(QKeySequence(QKeySequence::New).toString(QKeySequence::NativeText))) << keys.toStdString();
  EXPECT_TRUE(keys.contains("Ctrl+R")) << keys.toStdString();

  EXPECT_FALSE(documentation_path().isEmpty()) << "the README of the source tree";

  // The two boxes' texts as a person sees them.
  QList<QAction*> all = window.findChildren<QAction*>();
  // The run list's filter key is an action too, so the list names it (it was a bare QShortcut).
  EXPECT_TRUE(shortcuts_text(all).contains("Filter the run list")) << shortcuts_text(all).toStdString();
  for (const auto& [text, name] : {std::pair{about, QString("help_about.png")}, {shortcuts_text(all), "help_shortcuts.png"}}) {
    QLabel label;
    label.setTextFormat(Qt::RichText);
    label.setText(text);
    label.adjustSize();
    const QImage shot = label.grab().toImage();
    EXPECT_TRUE(shows_content(shot, label.size())) << name.toStdString();
    save_for_review(shot, name);
  }
}

}  // namespace
}  // namespace ganpo::ui
