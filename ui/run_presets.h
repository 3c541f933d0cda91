// The built-in run presets: TOML files embedded as Qt resources under ":/presets/<stem>.toml"
// (from resources/presets/), listed with the titles the New Run dialog shows.
#pragma once

#include <QString>
#include <QStringList>

#include "core/config.h"

namespace ganpo::ui {

// File stems in menu order: the known presets first, then any other embedded .toml file.
QStringList run_preset_stems();
// "Demo (CPU, minutes)" for "demo"; a file's first comment line or its stem otherwise.
QString run_preset_title(const QString& file_stem);
// Parses the embedded file; throws ConfigError when it is missing or malformed.
RunConfig load_run_preset(const QString& file_stem);

}  // namespace ganpo::ui
