// ModelFolderPanel: what the New Run dialog's Model page says about the folder in
// model.checkpoint, the same facts as `ganpo inspect` (architecture, parameters, stored dtype,
// shape, tokenizer, chat template), read off the UI thread after a short pause while the path
// is typed. A folder that cannot be used shows the loader's message in red; an empty path says
// that a fresh model is built from the Architecture fields.
#pragma once

#include <QString>
#include <QTimer>
#include <QWidget>

#include <cstdint>

class QLabel;

namespace ganpo::ui {

class ModelFolderPanel : public QWidget {
  Q_OBJECT
public:
  explicit ModelFolderPanel(QWidget* parent = nullptr);

  void setFolder(const QString& folder);
  bool isReading() const { return reading_; }
  QString text() const;
  // The folder's chat template variant as recognised ("" when none or not read yet).
  QString chatTemplate() const { return chat_template_; }
  // Why a run cannot start from the folder last read (a PEFT adapter folder, a config.json the
  // loader refuses), as a problem of model.checkpoint; empty while reading or where it can.
  QString folder() const { return folder_; }
  QString problem() const { return problem_; }
  // Why the folder's weights cannot be loaded (no safetensors files, a shard missing, a damaged
  // header): a problem unless the run trains the architecture from random weights.
  QString weightsProblem() const { return weights_problem_; }

Q_SIGNALS:
  void described();  // a description (or an error) is on screen

private:
  struct Description;
  void startReading();
  void show(const Description& d);

  QTimer pause_;
  QString folder_;
  uint64_t generation_ = 0;
  bool reading_ = false;
  QString chat_template_;
  QString problem_;
  QString weights_problem_;
  QLabel* label_;
};

}  // namespace ganpo::ui
