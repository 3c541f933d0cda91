// Build-time tool: renders the scalable application icon into the PNG sizes of the hicolor icon
// theme (desktops that do not read SVG icons, and AppStream, want them).
//   usage: ganpo_render_icon ICON.svg OUTPUT_FOLDER SIZE...   (writes OUTPUT_FOLDER/SIZE.png)
#include <QGuiApplication>
#include <QImage>
#include <QPainter>
#include <QSvgRenderer>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s ICON.svg OUTPUT_FOLDER SIZE...\n", argv[0]);
    return 2;
  }
  qputenv("QT_QPA_PLATFORM", "offscreen");
  QGuiApplication app(argc, argv);
  QSvgRenderer svg(QString::fromLocal8Bit(argv[1]));
  if (!svg.isValid()) {
    std::fprintf(stderr, "ganpo_render_icon: %s is not a readable SVG file\n", argv[1]);
    return 1;
  }
  for (int i = 3; i < argc; ++i) {
    const int size = std::atoi(argv[i]);
    if (size <= 0) {
      std::fprintf(stderr, "ganpo_render_icon: size %s is not a positive number\n", argv[i]);
      return 2;
    }
    QImage image(size, size, QImage::Format_ARGB32_Premultiplied);
    image.fill(Qt::transparent);
    QPainter painter(&image);
    painter.setRenderHint(QPainter::Antialiasing);
    svg.render(&painter);
    painter.end();
    const QString path = QString::fromLocal8Bit(argv[2]) + "/" + QString::number(size) + ".png";
    if (!image.save(path, "PNG")) {
      std::fprintf(stderr, "ganpo_render_icon: cannot write %s\n", qPrintable(path));
      return 1;
    }
  }
  return 0;
}
