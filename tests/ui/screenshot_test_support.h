// Checks for the screenshot tests: a grabbed widget image is asserted to show something (the
// widget's size, more than one colour, a curve's pen colour where a chart should draw one)
// rather than merely to exist. Images are written for a person to look at only when
// $GANPO_SCREENSHOT_DIR is set, so parallel test processes never share a fixed /tmp file.
#pragma once

#include <gtest/gtest.h>

#include <QColor>
#include <QDir>
#include <QImage>
#include <QSize>
#include <QString>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <unordered_map>

namespace ganpo::ui::testing {

// Distinct colours in img and the share of its pixels that have the most common one.
struct ImageStats {
  int distinct_colors = 0;
  double dominant_share = 1.0;
};

inline ImageStats image_stats(const QImage& image) {
  const QImage img = image.convertToFormat(QImage::Format_RGB32);
  std::unordered_map<QRgb, int64_t> counts;
  for (int y = 0; y < img.height(); ++y) {
    const auto* line = reinterpret_cast<const QRgb*>(img.constScanLine(y));
    for (int x = 0; x < img.width(); ++x) ++counts[line[x]];
  }
  ImageStats s;
  s.distinct_colors = static_cast<int>(counts.size());
  int64_t top = 0;
  for (const auto& [rgb, n] : counts) top = std::max(top, n);
  const int64_t total = static_cast<int64_t>(img.width()) * img.height();
  s.dominant_share = total > 0 ? static_cast<double>(top) / static_cast<double>(total) : 1.0;
  return s;
}

// Pixels of img within `tolerance` (sum of the channel differences) of colour.
inline int64_t pixels_near(const QImage& image, const QColor& color, int tolerance = 60) {
  const QImage img = image.convertToFormat(QImage::Format_RGB32);
  int64_t n = 0;
  for (int y = 0; y < img.height(); ++y) {
    const auto* line = reinterpret_cast<const QRgb*>(img.constScanLine(y));
    for (int x = 0; x < img.width(); ++x)
      n += std::abs(qRed(line[x]) - color.red()) + std::abs(qGreen(line[x]) - color.green()) +
               std::abs(qBlue(line[x]) - color.blue()) <=
           tolerance;
  }
  return n;
}

// The image has the widget's logical size and is not a blank (one-colour) surface: text, lines
// and frames give it many colours, and no single colour covers almost all of it.
inline ::testing::AssertionResult shows_content(const QImage& img, const QSize& logical_size) {
  if (img.isNull()) return ::testing::AssertionFailure() << "the grabbed image is null";
  const QSize logical(qRound(img.width() / img.devicePixelRatio()), qRound(img.height() / img.devicePixelRatio()));
  if (logical != logical_size)
    return ::testing::AssertionFailure() << "image is " << logical.width() << "x" << logical.height()
                                         << " (logical), the widget " << logical_size.width() << "x"
                                         << logical_size.height();
  const ImageStats s = image_stats(img);
  if (s.distinct_colors < 16 || s.dominant_share > 0.99)
    return ::testing::AssertionFailure() << "the image looks blank: " << s.distinct_colors << " colours, the commonest on "
                                         << 100.0 * s.dominant_share << "% of it";
  return ::testing::AssertionSuccess();
}

// Writes img as $GANPO_SCREENSHOT_DIR/name for a person to look at; nothing when that is unset.
inline void save_for_review(const QImage& img, const QString& name) {
  const QString dir = qEnvironmentVariable("GANPO_SCREENSHOT_DIR");
  if (dir.isEmpty()) return;
  EXPECT_TRUE(img.save(QDir(dir).filePath(name))) << "cannot write " << QDir(dir).filePath(name).toStdString();
}

}  // namespace ganpo::ui::testing
