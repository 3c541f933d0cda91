// ConfigForm: binds RunConfig keys to editor widgets, reads a RunConfig back from them, and
// routes validation messages to the field they name.
//
// Each binding knows its key ("train.learning_rate"), its editor (objectName = the key) and a
// red reason label (objectName = key + ".error"). Numbers are typed into line edits, not spin
// boxes, so any value can be typed and the reason it is wrong is shown instead of being
// silently clamped; they are parsed and printed locale-independently ("5e-7", never "5,0e-07").
// validate_config's messages start with the key they are about, which is how showProblems()
// finds the field. No torch here.
#pragma once

#include <QObject>
#include <QString>
#include <QStringList>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"

class QCheckBox;
class QComboBox;
class QLabel;
class QLineEdit;
class QWidget;

// "train.learning_rate" -> the key text and an accessor to c.train.learning_rate.
#define GANPO_CONFIG_KEY(path) QStringLiteral(#path), [](::ganpo::RunConfig& c) -> auto& { return c.path; }

namespace ganpo::ui {

template <class T>
using ConfigAccessor = T& (*)(RunConfig&);

// A value the config stores and the text a person sees for it.
using Choice = std::pair<QString, QString>;

class FormSection;

class ConfigForm : public QObject {
  Q_OBJECT
public:
  enum class PathKind { File, Folder };

  explicit ConfigForm(QObject* parent = nullptr);

  QLineEdit* addText(FormSection* section, const QString& key, ConfigAccessor<std::string> value,
                     const QString& label, const QString& tooltip = {});
  QLineEdit* addPath(FormSection* section, const QString& key, ConfigAccessor<std::string> value,
                     const QString& label, PathKind kind, const QString& tooltip = {});
  QComboBox* addChoice(FormSection* section, const QString& key, ConfigAccessor<std::string> value,
                       const QString& label, const std::vector<Choice>& choices, const QString& tooltip = {});
  // An editable combo box: the listed values or anything typed.
  QComboBox* addEditableChoice(FormSection* section, const QString& key, ConfigAccessor<std::string> value,
                               const QString& label, const QStringList& suggestions, const QString& tooltip = {});
  QLineEdit* addInt(FormSection* section, const QString& key, ConfigAccessor<int64_t> value, const QString& label,
                    const QString& tooltip = {});
  QLineEdit* addDouble(FormSection* section, const QString& key, ConfigAccessor<double> value,
                       const QString& label, const QString& tooltip = {});
  QCheckBox* addBool(FormSection* section, const QString& key, ConfigAccessor<bool> value, const QString& label,
                     const QString& tooltip = {});
  // A binding whose editor the caller builds and places; returns the reason label to place.
  // read() stores the editor's value into the config and returns a parse problem or "".
  QLabel* addCustom(const QString& key, QWidget* editor, std::function<void(const RunConfig&)> show,
                    std::function<QString(RunConfig&)> read);

  // Editors from the config. Emits no edited() while it runs.
  void show(const RunConfig& config);
  // The config the editors describe, starting from base; parse problems (text that is not a
  // number) are appended to parse_problems as "key must be ..., got ..." and leave base's value.
  RunConfig read(const RunConfig& base, QStringList* parse_problems) const;
  // Puts each message beside the field its leading key names (clearing every other field);
  // returns the messages no field took.
  QStringList showProblems(const QStringList& problems);

  QWidget* editor(const QString& key) const;
  QStringList keys() const;

Q_SIGNALS:
  void edited();  // the user changed any bound editor

private:
  struct Binding {
    QString key;
    QWidget* editor = nullptr;
    QLabel* error_label = nullptr;
    std::function<void(const RunConfig&)> show;
    std::function<QString(RunConfig&)> read;
  };
  QLabel* makeErrorLabel(const QString& key);
  void notifyEdited();

  std::vector<Binding> bindings_;
  bool showing_ = false;
};

// The key a problem is about: its message's leading dotted name ("model.lora.target_modules" of
// "model.lora.target_modules, the regular expression ..." or of "model.lora.r must be ...").
QString problem_key(const QString& message);

// Locale-independent number text: the shortest form that reads back to the same value.
QString format_config_number(double value);
bool parse_config_int(const QString& text, int64_t& out);
bool parse_config_double(const QString& text, double& out);

}  // namespace ganpo::ui
