// Line plots a person can open: named series (train / val loss against the step) drawn as a
// standalone SVG (no external fonts, scripts or styles) with a title, axis ticks and labels, grid
// lines, a legend and an optional logarithmic y axis. Points that cannot be drawn (NaN or
// infinite, or y <= 0 on a log axis) break a line into pieces instead of failing, so a diverged
// run still gets its plot; a plot with nothing drawable says "no data".
#pragma once

#include <string>
#include <vector>

namespace sy::report {

struct LineSeries {
  std::string name;
  std::vector<double> x, y;  // [n] each, drawn in the given order
  std::string color;         // CSS colour; empty: the next of matplotlib's tab10 palette
  bool dashed = false;
};

struct LinePlot {
  std::string title;
  std::string x_label = "step";
  std::string y_label = "loss";
  std::vector<LineSeries> series;
  bool log_y = false;
  double width = 800, height = 450;  // SVG user units (pixels)
  std::string footer;                // one line under the plot (optional)
};

// The SVG document. Throws sy::Error when a series' x and y differ in length or the size is too
// small to draw a plot (< 240 x 160).
std::string line_plot_svg(const LinePlot& plot);

// Writes line_plot_svg(plot) to `path` atomically: a failure leaves any existing file intact.
void write_line_plot_svg(const std::string& path, const LinePlot& plot);

}  // namespace sy::report
