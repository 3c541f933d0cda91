// Chart colours from the widget palette, shared by every QCustomPlot of the app (dashboard
// charts, the Compare overlay), so charts match the window in light and dark themes; and the x
// axis's ticker and label for each x-axis mode.
#pragma once

#include <QPalette>

#include "ui/chart_qcustomplot.h"
#include "ui/chart_series.h"

namespace ganpo::ui {

// Background, axes, ticks, grid, legend and (when given) the title element take the palette's
// Base / Text / Mid colours.
void apply_chart_palette(QCustomPlot* plot, const QPalette& palette, QCPTextElement* title = nullptr);

// Step and tokens seen as numbers, wall time (seconds) as h:m:s; the label says which.
void set_x_axis_mode(QCPAxis* axis, XAxisMode mode);

}  // namespace ganpo::ui
