#include "report/svg_line_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "io/file_util.h"
#include "report/svg_heatmap.h"  // xml_escape
#include "report/svg_style.h"
#include "util/error.h"

namespace sy::report {
namespace {

using svg::kLabelSize, svg::kMargin, svg::kTitleSize, svg::text_width;
constexpr double kTickLength = 5;
constexpr int kTargetTicks = 6;
const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

std::string num(double v) {
  return fmt::format("{:.1f}", v);
}

struct Range {
  double lo = 0, hi = 1;
};

// Ticks at 1, 2, 2.5 or 5 x 10^k inside [lo, hi], about kTargetTicks of them.
std::vector<double> linear_ticks(Range r, int* decimals) {
  const double raw = (r.hi - r.lo) / kTargetTicks;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * mag;
  for (double m : {1.0, 2.0, 2.5, 5.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  *decimals =
      std::clamp(int(-std::floor(std::log10(step) + 1e-9)) + (step / mag == 2.5 ? 1 : 0), 0, 10);
  std::vector<double> ticks;
  const double first = std::ceil(r.lo / step - 1e-9);
  for (int i = 0; i < 100; ++i) {
    const double v = (first + i) * step;  // from the index: no accumulated rounding
    if (v > r.hi + step * 1e-9) break;
    ticks.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  }
  return ticks;
}

std::string tick_label(double v, int decimals) {
  return std::fabs(v) >= 1e7 ? fmt::format("{:g}", v) : fmt::format("{:.{}f}", v, decimals);
}

// Log axis (r in log10 units): powers of ten, with 2 and 5 (or every digit) between them when
// the range spans few decades; linear ticks when even that gives fewer than two.
std::vector<std::pair<double, std::string>> log_ticks(Range r) {
  const double span = r.hi - r.lo;
  const std::vector<double> mantissas = span >= 3 ? std::vector<double>{1}
                                        : span >= 1
                                            ? std::vector<double>{1, 2, 5}
                                            : std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<std::pair<double, std::string>> ticks;
  for (double k = std::floor(r.lo); k <= std::ceil(r.hi); ++k)
    for (double m : mantissas) {
      const double v = m * std::pow(10.0, k);
      const double lv = std::log10(v);
      if (lv >= r.lo - 1e-9 && lv <= r.hi + 1e-9) ticks.push_back({lv, fmt::format("{:g}", v)});
    }
  if (ticks.size() >= 2) return ticks;
  ticks.clear();
  int decimals = 0;
  for (double v : linear_ticks({std::pow(10.0, r.lo), std::pow(10.0, r.hi)}, &decimals))
    if (v > 0) ticks.push_back({std::log10(v), tick_label(v, decimals)});
  return ticks;
}

// The data range, padded; a single value gets a window around it.
Range padded(double lo, double hi, double pad_fraction) {
  if (hi > lo) {
    const double pad = (hi - lo) * pad_fraction;
    return {lo - pad, hi + pad};
  }
  const double half = std::max(std::fabs(lo) * 0.05, 0.5);
  return {lo - half, hi + half};
}

}  // namespace

std::string line_plot_svg(const LinePlot& p) {
  const std::string what = p.title.empty() ? "line plot" : fmt::format("line plot '{}'", p.title);
  for (const auto& s : p.series)
    if (s.x.size() != s.y.size())
      fail("{}: series '{}' has {} x values but {} y values", what, s.name, s.x.size(), s.y.size());
  if (!(p.width >= 240 && p.height >= 160))
    fail("{}: size {} x {} is too small (at least 240 x 160)", what, p.width, p.height);

  auto drawable = [&](double x, double y) {
    return std::isfinite(x) && std::isfinite(y) && (!p.log_y || y > 0);
  };
  auto y_of = [&](double y) { return p.log_y ? std::log10(y) : y; };

  // Data ranges over the drawable points (y in log10 units on a log axis).
  std::optional<Range> xr, yr;
  for (const auto& s : p.series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!drawable(s.x[i], s.y[i])) continue;
      const double x = s.x[i], y = y_of(s.y[i]);
      xr = xr ? Range{std::min(xr->lo, x), std::max(xr->hi, x)} : Range{x, x};
      yr = yr ? Range{std::min(yr->lo, y), std::max(yr->hi, y)} : Range{y, y};
    }
  const bool has_data = xr.has_value();
  const Range x_range = has_data ? padded(xr->lo, xr->hi, 0.0) : Range{0, 1};
  const Range y_range = has_data ? padded(yr->lo, yr->hi, 0.05) : Range{0, 1};

  int x_decimals = 0, y_decimals = 0;
  std::vector<std::pair<double, std::string>> x_ticks, y_ticks;
  for (double v : linear_ticks(x_range, &x_decimals))
    x_ticks.push_back({v, tick_label(v, x_decimals)});
  if (p.log_y) {
    y_ticks = log_ticks(y_range);
  } else {
    for (double v : linear_ticks(y_range, &y_decimals))
      y_ticks.push_back({v, tick_label(v, y_decimals)});
  }

  // Geometry.
  size_t y_label_chars = 0;
  for (const auto& [v, label] : y_ticks) y_label_chars = std::max(y_label_chars, label.size());
  const double title_h = p.title.empty() ? 0 : kTitleSize + 10;
  const double plot_x = kMargin + (p.y_label.empty() ? 0 : kLabelSize + 8) +
                        text_width(y_label_chars, kLabelSize) + kTickLength + 4;
  const double plot_y = kMargin + title_h + 6;
  const double bottom = kMargin + (p.x_label.empty() ? 0 : kLabelSize + 6) + kLabelSize +
                        kTickLength + 6 + (p.footer.empty() ? 0 : kLabelSize + 8);
  const double plot_w =
      p.width - plot_x - kMargin - text_width(4, kLabelSize);  // room for the last x label
  const double plot_h = p.height - plot_y - bottom;
  auto px = [&](double x) {
    return plot_x + (x - x_range.lo) / (x_range.hi - x_range.lo) * plot_w;
  };
  auto py = [&](double y) {
    return plot_y + plot_h - (y - y_range.lo) / (y_range.hi - y_range.lo) * plot_h;
  };

  std::string s;
  s += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  s += fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} "
      "{1}\" "
      "font-family=\"monospace\" font-size=\"{2}\">\n",
      num(p.width), num(p.height), kLabelSize);
  s += fmt::format("<title>{}</title>\n", xml_escape(p.title.empty() ? "line plot" : p.title));
  s += "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  if (!p.title.empty())
    s += fmt::format(
        "<text x=\"{}\" y=\"{}\" font-family=\"sans-serif\" font-size=\"{}\" "
        "font-weight=\"bold\">{}</text>\n",
        num(kMargin), num(kMargin + kTitleSize), kTitleSize, xml_escape(p.title));

  // Grid, ticks and tick labels.
  s += "<g class=\"x-ticks\" text-anchor=\"middle\">\n";
  for (const auto& [v, label] : x_ticks) {
    const double x = px(v);
    s += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#e6e6e6\"/>"
        "<line x1=\"{0}\" y1=\"{2}\" x2=\"{0}\" y2=\"{3}\" stroke=\"#444\"/>"
        "<text x=\"{0}\" y=\"{4}\">{5}</text>\n",
        num(x), num(plot_y), num(plot_y + plot_h), num(plot_y + plot_h + kTickLength),
        num(plot_y + plot_h + kTickLength + kLabelSize + 2), xml_escape(label));
  }
  s += "</g>\n<g class=\"y-ticks\" text-anchor=\"end\" dominant-baseline=\"central\">\n";
  for (const auto& [v, label] : y_ticks) {
    const double y = py(v);
    s += fmt::format(
        "<line x1=\"{0}\" y1=\"{2}\" x2=\"{1}\" y2=\"{2}\" stroke=\"#e6e6e6\"/>"
        "<line x1=\"{3}\" y1=\"{2}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#444\"/>"
        "<text x=\"{4}\" y=\"{2}\">{5}</text>\n",
        num(plot_x), num(plot_x + plot_w), num(y), num(plot_x - kTickLength),
        num(plot_x - kTickLength - 3), xml_escape(label));
  }
  s += "</g>\n";
  s += fmt::format(
      "<rect class=\"plot-area\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" "
      "stroke=\"#444\"/>\n",
      num(plot_x), num(plot_y), num(plot_w), num(plot_h));
  if (!p.x_label.empty())
    s +=
        fmt::format("<text class=\"x-label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                    num(plot_x + plot_w / 2),
                    num(plot_y + plot_h + kTickLength + 2 * kLabelSize + 8), xml_escape(p.x_label));
  if (!p.y_label.empty()) {
    const double cx = kMargin + kLabelSize / 2, cy = plot_y + plot_h / 2;
    s += fmt::format(
        "<text class=\"y-label\" x=\"{0}\" y=\"{1}\" text-anchor=\"middle\" "
        "dominant-baseline=\"central\" "
        "transform=\"rotate(-90 {0} {1})\">{2}</text>\n",
        num(cx), num(cy), xml_escape(p.y_label + (p.log_y ? " (log scale)" : "")));
  }
  if (!has_data)
    s += fmt::format(
        "<text class=\"no-data\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\">no "
        "data</text>\n",
        num(plot_x + plot_w / 2), num(plot_y + plot_h / 2));

  // Series: one polyline per run of drawable points; a lone point becomes a dot.
  auto colour = [&](size_t i) {
    return p.series[i].color.empty() ? std::string(kPalette[i % std::size(kPalette)])
                                     : p.series[i].color;
  };
  for (size_t k = 0; k < p.series.size(); ++k) {
    const LineSeries& ser = p.series[k];
    const std::string c = xml_escape(colour(k));
    s += fmt::format("<g class=\"series\" stroke=\"{0}\" fill=\"{0}\"><title>{1}</title>\n", c,
                     xml_escape(ser.name));
    std::vector<std::string> run;
    auto flush = [&] {
      if (run.size() == 1) {
        const size_t comma = run[0].find(',');
        s += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"2.5\" stroke=\"none\"/>\n",
                         run[0].substr(0, comma), run[0].substr(comma + 1));
      } else if (run.size() > 1) {
        s += fmt::format(
            "<polyline fill=\"none\" stroke-width=\"1.6\" stroke-linejoin=\"round\"{} "
            "points=\"{}\"/>\n",
            ser.dashed ? " stroke-dasharray=\"6 4\"" : "", fmt::join(run, " "));
      }
      run.clear();
    };
    for (size_t i = 0; i < ser.x.size(); ++i) {
      if (drawable(ser.x[i], ser.y[i]))
        run.push_back(num(px(ser.x[i])) + "," + num(py(y_of(ser.y[i]))));
      else
        flush();
    }
    flush();
    s += "</g>\n";
  }

  // Legend, inside the plot's top-right corner (loss curves fall away from it): a sample of each
  // line, its name and its last drawable value.
  if (!p.series.empty()) {
    std::vector<std::string> texts;
    size_t chars = 0;
    for (const auto& ser : p.series) {
      std::string t = ser.name.empty() ? "(unnamed)" : ser.name;
      std::optional<double> last;
      for (size_t i = ser.x.size(); i-- > 0 && !last;)
        if (drawable(ser.x[i], ser.y[i])) last = ser.y[i];
      t += last ? fmt::format("  {:.4g}", *last) : std::string("  (no data)");
      chars = std::max(chars, t.size());
      texts.push_back(std::move(t));
    }
    const double row_h = kLabelSize + 6, sample_w = 22;
    const double box_w = sample_w + 14 + text_width(chars, kLabelSize) + 8;
    const double box_h = row_h * double(texts.size()) + 8;
    const double bx = plot_x + plot_w - box_w - 8, by = plot_y + 8;
    s += fmt::format(
        "<g class=\"legend\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#ffffff\" "
        "fill-opacity=\"0.85\" stroke=\"#bbb\"/>\n",
        num(bx), num(by), num(box_w), num(box_h));
    for (size_t k = 0; k < texts.size(); ++k) {
      const double y = by + 4 + row_h * (double(k) + 0.5);
      s += fmt::format(
          "<line x1=\"{0}\" y1=\"{2}\" x2=\"{1}\" y2=\"{2}\" stroke=\"{3}\" stroke-width=\"2\"{4}/>"
          "<text class=\"legend-entry\" x=\"{5}\" y=\"{2}\" "
          "dominant-baseline=\"central\">{6}</text>\n",
          num(bx + 6), num(bx + 6 + sample_w), num(y), xml_escape(colour(k)),
          p.series[k].dashed ? " stroke-dasharray=\"6 4\"" : "", num(bx + 6 + sample_w + 8),
          xml_escape(texts[k]));
    }
    s += "</g>\n";
  }
  if (!p.footer.empty())
    s += fmt::format("<text class=\"footer\" x=\"{}\" y=\"{}\" fill=\"#444\">{}</text>\n",
                     num(kMargin), num(p.height - kMargin), xml_escape(p.footer));
  s += "</svg>\n";
  return s;
}

void write_line_plot_svg(const std::string& path, const LinePlot& plot) {
  const std::string svg = line_plot_svg(plot);  // validate before touching the file system
  io::write_text_file_atomic(path, svg);
}

}  // namespace sy::report
