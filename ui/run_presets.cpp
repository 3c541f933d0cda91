#include "ui/run_presets.h"

#include <QDir>
#include <QFile>

#include "core/error.h"

namespace ganpo::ui {
namespace {

struct KnownPreset {
  const char* stem;
  const char* title;
};

// The order and the titles the UX document names.
constexpr KnownPreset kKnownPresets[] = {
    {"demo", "Demo (CPU, minutes)"},
    {"paper-gemma2-2b-ganpo", "Paper: Gemma-2-2B-it GANPO"},
    {"paper-llama3-8b-ganpo", "Paper: Llama-3-8B GANPO"},
};

QString resource_path(const QString& stem) { return QStringLiteral(":/presets/") + stem + QStringLiteral(".toml"); }

}  // namespace

QStringList run_preset_stems() {
  QStringList stems;
  for (const auto& known : kKnownPresets)
    if (QFile::exists(resource_path(QString::fromLatin1(known.stem)))) stems.append(QString::fromLatin1(known.stem));
  const QStringList files = QDir(QStringLiteral(":/presets")).entryList({QStringLiteral("*.toml")}, QDir::Files, QDir::Name);
  for (const QString& file : files) {
    const QString stem = file.chopped(5);
    if (!stems.contains(stem)) stems.append(stem);
  }
  return stems;
}

QString run_preset_title(const QString& file_stem) {
  for (const auto& known : kKnownPresets)
    if (file_stem == QLatin1String(known.stem)) return QString::fromLatin1(known.title);
  QFile file(resource_path(file_stem));
  if (file.open(QIODevice::ReadOnly)) {
    const QString first = QString::fromUtf8(file.readLine()).trimmed();
    if (first.startsWith(QLatin1Char('#')) && first.size() > 1) return first.mid(1).trimmed();
  }
  return file_stem;
}

RunConfig load_run_preset(const QString& file_stem) {
  QFile file(resource_path(file_stem));
  if (!file.open(QIODevice::ReadOnly))
    throw ConfigError("there is no built-in preset \"" + file_stem.toStdString() + "\"");
  try {
    return config_from_toml(QString::fromUtf8(file.readAll()).toStdString());
  } catch (const ConfigError& e) {
    throw ConfigError("built-in preset " + file_stem.toStdString() + ": " + e.what());
  }
}

}  // namespace ganpo::ui
