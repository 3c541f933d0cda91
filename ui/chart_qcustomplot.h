// The one way ui/ includes QCustomPlot. Its header is written with Qt's keyword macros
// (signals, slots, emit, foreach), which this project switches off with QT_NO_KEYWORDS because
// LibTorch declares a member named `slots`. They are defined to the Q_ forms for the length of
// the include only, and undefined again afterwards.
#pragma once

#if defined(QT_NO_KEYWORDS)
#define signals Q_SIGNALS
#define slots Q_SLOTS
#define emit Q_EMIT
#define foreach Q_FOREACH
#include <qcustomplot.h>
#undef signals
#undef slots
#undef emit
#undef foreach
#else
#include <qcustomplot.h>
#endif
