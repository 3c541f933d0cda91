#include "ui/help_menu.h"

#include <QAction>
#include <QDesktopServices>
#include <QDir>
#include <QFileInfo>
#include <QKeySequence>
#include <QMainWindow>
#include <QMenuBar>
#include <QMessageBox>
#include <QUrl>

#include "core/build_info.h"

namespace ganpo::ui {

QString about_text(const QString& workspace_path) {
  const QDir beside = QFileInfo(workspace_path).absoluteDir();
  QString versions = QString::fromStdString(version_details()).toHtmlEscaped();
  versions.replace("\n", "<br>");
  return QString("<h3>GANPO Workbench</h3><p>%1</p>"
                 "<p>Preference optimization of language models: DPO, SimPO, IPO and hinge, with or without "
                 "GANPO's latent adversarial regularizer.</p>"
                 "<table><tr><td>Workspace</td><td><code>%2</code></td></tr>"
                 "<tr><td>Run folders</td><td><code>%3</code></td></tr>"
                 "<tr><td>Worker logs</td><td><code>%4</code></td></tr></table>")
      .arg(versions, QFileInfo(workspace_path).absoluteFilePath().toHtmlEscaped(),
           beside.filePath("runs").toHtmlEscaped(), beside.filePath("logs").toHtmlEscaped());
}

QString shortcuts_text(const QList<QAction*>& actions) {
  QString rows;
  for (const QAction* a : actions) {
    if (a->shortcut().isEmpty()) continue;
    QString name = a->text();
    name.remove('&');
    rows += QString("<tr><td><b>%1</b></td><td>%2</td></tr>")
                .arg(a->shortcut().toString(QKeySequence::NativeText).toHtmlEscaped(), name.toHtmlEscaped());
  }
  return "<table cellspacing='6'>" + rows + "</table>";
}

QString documentation_path() {
  for (const QString& candidate : {QStringLiteral("/usr/share/doc/ganpo-workbench/README.md"),
                                   QStringLiteral(GANPO_SOURCE_README)})
    if (QFileInfo::exists(candidate)) return candidate;
  return {};
}

void add_help_menu(QMainWindow* window, const QString& workspace_path, const QList<QAction*>& actions) {
  auto* menu = window->menuBar()->addMenu(QObject::tr("&Help"));
  menu->addAction(QObject::tr("&Documentation"), window, [window] {
    const QString readme = documentation_path();
    if (readme.isEmpty() || !QDesktopServices::openUrl(QUrl::fromLocalFile(readme)))
      QMessageBox::information(window, QObject::tr("Documentation"),
                               readme.isEmpty() ? QObject::tr("The README was not found; it is in the source tree and "
                                                              "in /usr/share/doc/ganpo-workbench with the package.")
                                                : QObject::tr("Open %1 in a Markdown viewer or a browser.").arg(readme));
  });
  menu->addAction(QObject::tr("&Keyboard Shortcuts"), window, [window, actions] {
    QMessageBox box(window);
    box.setWindowTitle(QObject::tr("Keyboard shortcuts"));
    box.setTextFormat(Qt::RichText);
    box.setText(shortcuts_text(actions));
    box.exec();
  });
  menu->addSeparator();
  menu->addAction(QObject::tr("&About GANPO Workbench"), window, [window, workspace_path] {
    QMessageBox::about(window, QObject::tr("About GANPO Workbench"), about_text(workspace_path));
  });
}

}  // namespace ganpo::ui
