// Chart colours from the widget palette, shared by every QCustomPlot of the app (dashboard
// charts, the Compare overlay), so charts match the window in light and dark themes.
#pragma once

#include <QPalette>

#include "ui/chart_qcustomplot.h"

namespace ganpo::ui {

// Background, axes, ticks, grid, legend and (when given) the title element take the palette's
// Base / Text / Mid colours.
void apply_chart_palette(QCustomPlot* plot, const QPalette& palette, QCPTextElement* title = nullptr);

}  // namespace ganpo::ui
