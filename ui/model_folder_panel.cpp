#include "ui/model_folder_panel.h"

#include <QFileInfo>
#include <QLabel>
#include <QVBoxLayout>

#include <exception>

#include "core/model/model_folder_info.h"
#include "ui/background_read.h"

namespace ganpo::ui {

struct ModelFolderPanel::Description {
  QString html;
  QString chat_template;
  QString problem;  // (a missing folder is missing_inputs' to say)
  QString weights_problem;  // why its weights cannot be loaded (a run of random weights needs none)
};

ModelFolderPanel::ModelFolderPanel(QWidget* parent) : QWidget(parent) {
  setObjectName(QStringLiteral("modelFolderPanel"));
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(0, 0, 0, 0);
  label_ = new QLabel(this);
  label_->setObjectName(QStringLiteral("modelFolderPanel.text"));
  label_->setWordWrap(true);
  label_->setTextFormat(Qt::RichText);
  label_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  layout->addWidget(label_);
  pause_.setSingleShot(true);
  pause_.setInterval(300);
  connect(&pause_, &QTimer::timeout, this, &ModelFolderPanel::startReading);
  setFolder({});
}

QString ModelFolderPanel::text() const { return label_->text(); }

void ModelFolderPanel::setFolder(const QString& folder_in) {
  const QString folder = folder_in.trimmed();
  if (folder == folder_ && (reading_ || !label_->text().isEmpty())) return;
  folder_ = folder;
  ++generation_;  // a read under way is for another path now
  chat_template_.clear();
  problem_.clear();
  weights_problem_.clear();
  if (folder_.isEmpty()) {
    pause_.stop();
    reading_ = false;
    label_->setText(tr("No model folder: a fresh model is built from the Architecture fields below. Pick a Hugging "
                       "Face folder (config.json, *.safetensors, tokenizer.json) to start from pretrained weights."));
    return;
  }
  reading_ = true;
  label_->setText(tr("Reading %1…").arg(folder_.toHtmlEscaped()));
  pause_.start();
}

void ModelFolderPanel::startReading() {
  const uint64_t generation = ++generation_;
  read_in_background(
      this,
      [folder = folder_]() {
        Description d;
        if (!QFileInfo(folder).isDir()) {
          d.html = QStringLiteral("<span style='color:#c62828'>%1</span>")
                       .arg(tr("There is no folder at %1.").arg(folder).toHtmlEscaped());
          return d;
        }
        try {
          nlohmann::json j = describe_model_folder(folder.toStdString());
          j.erase("training_memory");  // the dialog's estimate line uses the config being edited
          QString rows;
          for (const auto& [label, text] : describe_lines(j))
            rows += QStringLiteral("<tr><td style='padding-right:12px; color:gray;'>%1</td><td>%2</td></tr>")
                        .arg(QString::fromStdString(label).toHtmlEscaped(), QString::fromStdString(text).toHtmlEscaped());
          d.html = QStringLiteral("<table>%1</table>").arg(rows);
          if (j.contains("adapter")) {  // what the trainer would refuse at the start
            d.problem = tr("This is a PEFT adapter folder: a run starts from a full model folder. Pick its base "
                           "model (above) and set LoRA on the Model page, or pick a LoRA run's checkpoint, which "
                           "holds the merged model.");
            d.html += QStringLiteral("<span style='color:#c62828'>%1</span>").arg(d.problem.toHtmlEscaped());
          }
          // What the trainer refuses at the start, said before it starts.
          if (j["tokenizer"].contains("problem")) {
            d.problem = QString::fromStdString(j["tokenizer"]["problem"].get<std::string>());
            d.html += QStringLiteral("<span style='color:#c62828'>%1</span>").arg(d.problem.toHtmlEscaped());
          }
          if (j.contains("weights_error") && !j.contains("adapter")) {
            d.weights_problem = QString::fromStdString(j["weights_error"].get<std::string>());
            d.html += QStringLiteral("<br><span style='color:#c62828'>%1</span>")
                          .arg(tr("Its weights cannot be loaded (train its architecture from random weights, or "
                                  "fix the folder): %1")
                                   .arg(d.weights_problem)
                                   .toHtmlEscaped());
          }
          if (j.contains("chat_template") && j["chat_template"].is_string())
            d.chat_template = QString::fromStdString(j["chat_template"].get<std::string>());
        } catch (const std::exception& e) {
          d.problem = QString::fromStdString(e.what());
          d.html = QStringLiteral("<span style='color:#c62828'>%1</span>").arg(d.problem.toHtmlEscaped());
        }
        return d;
      },
      [this, generation](Description d) {
        if (generation != generation_) return;
        show(d);
      });
}

void ModelFolderPanel::show(const Description& d) {
  reading_ = false;
  chat_template_ = d.chat_template;
  problem_ = d.problem;
  weights_problem_ = d.weights_problem;
  label_->setText(d.html);
  Q_EMIT described();
}

}  // namespace ganpo::ui
