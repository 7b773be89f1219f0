#include "report/svg_heatmap.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "io/file_util.h"
#include "report/svg_style.h"
#include "util/error.h"

namespace sy::report {
namespace {

using svg::kLabelSize, svg::kMargin, svg::kTitleSize, svg::text_width;
constexpr double kGap = 10;
constexpr double kTargetGridWidth = 960;
constexpr double kMinCellWidth = 4, kMaxCellWidth = 44;
constexpr double kMinCellHeight = 16, kMaxCellHeight = 30;
constexpr double kBarWidth = 14, kMinBarHeight = 120;
constexpr int kGradientStops = 33;

size_t max_length(const std::vector<std::string>& items) {
  size_t n = 0;
  for (const auto& s : items) n = std::max(n, s.size());
  return n;
}

// The smallest "nice" label stride (1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100, ...)
// whose spacing fits one label.
int64_t label_stride(double cell_width, double label_width) {
  static const int64_t kNice[] = {1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64};
  for (int64_t scale = 1;; scale *= 100)
    for (int64_t n : kNice)
      if (double(n * scale) * cell_width >= label_width) return n * scale;
}

// Relative luminance (WCAG) of an 8-bit sRGB colour, to pick black or white text on it.
double luminance(const std::array<uint8_t, 3>& rgb) {
  auto linear = [](uint8_t c) {
    const double u = c / 255.0;
    return u <= 0.04045 ? u / 12.92 : std::pow((u + 0.055) / 1.055, 2.4);
  };
  return 0.2126 * linear(rgb[0]) + 0.7152 * linear(rgb[1]) + 0.0722 * linear(rgb[2]);
}

std::string fmt_num(double v) {
  return fmt::format("{:g}", std::round(v * 100) / 100);
}

void validate(const Heatmap& m) {
  const std::string what = m.title.empty() ? "heatmap" : fmt::format("heatmap '{}'", m.title);
  if (m.num_rows <= 0 || m.num_cols <= 0)
    fail("{}: nothing to draw ({} rows x {} columns); the matrix must not be empty", what,
         m.num_rows, m.num_cols);
  if (m.values.size() != size_t(m.num_rows) * size_t(m.num_cols))
    fail("{}: {} values given for {} rows x {} columns", what, m.values.size(), m.num_rows,
         m.num_cols);
  auto check_labels = [&](const std::vector<std::string>& v, int64_t n, const char* name,
                          const char* unit) {
    if (!v.empty() && int64_t(v.size()) != n)
      fail("{}: {} {} given for {} {}", what, v.size(), name, n, unit);
  };
  check_labels(m.row_labels, m.num_rows, "row labels", "rows");
  check_labels(m.col_labels, m.num_cols, "column labels", "columns");
  check_labels(m.row_notes, m.num_rows, "row notes", "rows");
  for (int64_t r = 0; r < m.num_rows; ++r)
    for (int64_t c = 0; c < m.num_cols; ++c) {
      const double v = m.values[size_t(r * m.num_cols + c)];
      if (!std::isfinite(v))
        fail("{}: the value at row {}{}, column {}{} is {}; every value must be finite", what, r,
             m.row_labels.empty() ? "" : " ('" + m.row_labels[size_t(r)] + "')", c,
             m.col_labels.empty() ? "" : " ('" + m.col_labels[size_t(c)] + "')",
             std::isnan(v) ? "NaN" : "infinite");
    }
  for (const auto& bound : {m.scale_min, m.scale_max})
    if (bound && !std::isfinite(*bound))
      fail("{}: the colour scale bound {} is not finite", what, *bound);
  if (m.scale_min && m.scale_max && !(*m.scale_min < *m.scale_max))
    fail("{}: colour scale minimum {} is not below its maximum {}", what, *m.scale_min,
         *m.scale_max);
  if (m.precision > 12) fail("{}: precision {} is more than 12 digits", what, m.precision);
}

}  // namespace

std::array<uint8_t, 3> viridis(double t) {
  // Degree-6 least-squares fit of matplotlib's viridis per channel (public-domain fit by
  // Matt Zucker); its lightness increases monotonically over [0, 1].
  static const double kC[7][3] = {{0.2777273272234177, 0.005407344544966578, 0.3340998053353061},
                                  {0.1050930431085774, 1.404613529898575, 1.384590162594685},
                                  {-0.3308618287255563, 0.214847559468213, 0.09509516302823659},
                                  {-4.634230498983486, -5.799100973351585, -19.33244095627987},
                                  {6.228269936347081, 14.17993336680509, 56.69055260068105},
                                  {4.776384997670288, -13.74514537774601, -65.35303263337234},
                                  {-5.435455855934631, 4.645852612178535, 26.3124352495832}};
  t = std::isnan(t) ? 0.0 : std::clamp(t, 0.0, 1.0);
  std::array<uint8_t, 3> rgb{};
  for (int ch = 0; ch < 3; ++ch) {
    double v = kC[6][ch];
    for (int i = 5; i >= 0; --i) v = v * t + kC[i][ch];
    rgb[size_t(ch)] = uint8_t(std::lround(std::clamp(v, 0.0, 1.0) * 255.0));
  }
  return rgb;
}

std::string css_hex(const std::array<uint8_t, 3>& rgb) {
  return fmt::format("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]);
}

std::string xml_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    const auto u = static_cast<unsigned char>(ch);
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        if ((u < 0x20 && ch != '\t' && ch != '\n' && ch != '\r') || u == 0x7f)
          out += '?';
        else
          out += ch;
    }
  }
  return out;
}

std::string heatmap_svg(const Heatmap& m) {
  validate(m);
  const int64_t R = m.num_rows, C = m.num_cols;

  auto row_label = [&](int64_t r) {
    return m.row_labels.empty() ? std::to_string(r) : m.row_labels[size_t(r)];
  };
  auto col_label = [&](int64_t c) {
    return m.col_labels.empty() ? std::to_string(c) : m.col_labels[size_t(c)];
  };

  // Values: range of the colour scale and their text form.
  double lo = m.values[0], hi = m.values[0];
  bool integral = true;
  for (double v : m.values) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    integral &= v == std::floor(v) && std::fabs(v) < 1e15;
  }
  if (m.scale_min) lo = *m.scale_min;
  if (m.scale_max) hi = *m.scale_max;
  int precision = m.precision;
  if (precision < 0) {
    const double mag = std::max(std::fabs(lo), std::fabs(hi));
    precision = integral ? 0 : mag < 10 ? 2 : mag < 100 ? 1 : 0;
  }
  auto text_of = [&](double v) { return fmt::format("{:.{}f}", v, precision); };
  auto colour_of = [&](double v) { return viridis(hi > lo ? (v - lo) / (hi - lo) : 0.5); };

  // Geometry.
  std::vector<std::string> row_texts(static_cast<size_t>(R)), col_texts(static_cast<size_t>(C));
  for (int64_t r = 0; r < R; ++r) row_texts[size_t(r)] = row_label(r);
  for (int64_t c = 0; c < C; ++c) col_texts[size_t(c)] = col_label(c);
  const double cell_w =
      std::clamp(std::floor(kTargetGridWidth / double(C)), kMinCellWidth, kMaxCellWidth);
  const double cell_h = std::clamp(cell_w, kMinCellHeight, kMaxCellHeight);
  const double col_font = std::min(kLabelSize, std::max(8.0, cell_h - 4));
  const int64_t stride = label_stride(cell_w, text_width(max_length(col_texts), col_font) + 4);

  double cell_font = std::min(11.0, cell_h - 5);
  bool cell_text = m.cell_text && cell_font >= 7;
  for (int64_t i = 0; cell_text && i < R * C; ++i)
    cell_text = text_width(text_of(m.values[size_t(i)]).size(), cell_font) <= cell_w - 3;

  const double title_h = m.title.empty() ? 0 : kTitleSize + 10;
  const double grid_x = kMargin + text_width(max_length(row_texts), kLabelSize) + 8;
  const double grid_y = kMargin + title_h + col_font + 8;
  const double grid_w = cell_w * double(C), grid_h = cell_h * double(R);
  const double grid_right = grid_x + grid_w;

  double notes_w = 0;
  if (!m.row_notes.empty())
    notes_w = std::max(text_width(max_length(m.row_notes), kLabelSize),
                       text_width(m.notes_header.size(), kLabelSize));
  const double notes_x = grid_right + kGap;
  const double bar_x = notes_x + notes_w + (notes_w > 0 ? 2 * kGap : kGap);
  const double bar_y = grid_y;
  const double bar_h = std::max(grid_h, kMinBarHeight);
  const std::string lo_text = fmt::format("{:.{}f}", lo, precision);
  const std::string hi_text = fmt::format("{:.{}f}", hi, precision);
  const double bar_label_w = text_width(std::max(lo_text.size(), hi_text.size()), kLabelSize);
  const double caption_w = text_width(m.value_caption.size(), kLabelSize);
  const double right = std::max(bar_x + kBarWidth + 6 + bar_label_w, bar_x + caption_w) + kMargin;
  const double footer_y = std::max(grid_y + grid_h, bar_y + bar_h) + (m.footer.empty() ? 0 : 20);
  const double width = std::max(right, kMargin * 2 + text_width(m.title.size(), kTitleSize));
  const double height = footer_y + kMargin;

  std::string s;
  s.reserve(size_t(R * C) * 120 + 4096);
  s += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  s += fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} "
      "{1}\" font-family=\"monospace\" font-size=\"{2}\">\n",
      fmt_num(width), fmt_num(height), kLabelSize);
  s += fmt::format("<title>{}</title>\n", xml_escape(m.title.empty() ? "heatmap" : m.title));
  s += "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  if (!m.title.empty())
    s += fmt::format(
        "<text x=\"{}\" y=\"{}\" font-family=\"sans-serif\" font-size=\"{}\" "
        "font-weight=\"bold\">{}</text>\n",
        fmt_num(kMargin), fmt_num(kMargin + kTitleSize), kTitleSize, xml_escape(m.title));

  // Colour-bar gradient, bottom (min) to top (max).
  s += "<defs><linearGradient id=\"sy-scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (int i = 0; i < kGradientStops; ++i) {
    const double t = double(i) / (kGradientStops - 1);
    s += fmt::format("<stop offset=\"{}\" stop-color=\"{}\"/>", fmt_num(t), css_hex(viridis(t)));
  }
  s += "</linearGradient></defs>\n";

  // Column labels (thinned to every `stride`-th column) with ticks.
  s += fmt::format("<g class=\"col-labels\" font-size=\"{}\" text-anchor=\"middle\">\n",
                   fmt_num(col_font));
  for (int64_t c = 0; c < C; c += stride) {
    const double cx = grid_x + (double(c) + 0.5) * cell_w;
    s += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>", fmt_num(cx), fmt_num(grid_y - 5),
                     xml_escape(col_texts[size_t(c)]));
    if (stride > 1)
      s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#666\"/>",
                       fmt_num(cx), fmt_num(grid_y - 3), fmt_num(grid_y));
    s += "\n";
  }
  s += "</g>\n";

  // Row labels and notes.
  s += "<g class=\"row-labels\" text-anchor=\"end\" dominant-baseline=\"central\">\n";
  for (int64_t r = 0; r < R; ++r)
    s +=
        fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", fmt_num(grid_x - 6),
                    fmt_num(grid_y + (double(r) + 0.5) * cell_h), xml_escape(row_texts[size_t(r)]));
  s += "</g>\n";
  if (!m.row_notes.empty()) {
    s += "<g class=\"row-notes\" dominant-baseline=\"central\" fill=\"#333\">\n";
    if (!m.notes_header.empty())
      s += fmt::format("<text x=\"{}\" y=\"{}\" font-weight=\"bold\">{}</text>\n", fmt_num(notes_x),
                       fmt_num(grid_y - 5 - kLabelSize / 2 + 2), xml_escape(m.notes_header));
    for (int64_t r = 0; r < R; ++r)
      s += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", fmt_num(notes_x),
                       fmt_num(grid_y + (double(r) + 0.5) * cell_h),
                       xml_escape(m.row_notes[size_t(r)]));
    s += "</g>\n";
  }

  // Cells, each with a tooltip giving its labels and exact value.
  s += fmt::format("<g class=\"cells\" shape-rendering=\"crispEdges\"{}>\n",
                   cell_w >= 8 ? " stroke=\"#ffffff\" stroke-width=\"0.5\"" : "");
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const double v = m.values[size_t(r * C + c)];
      s += fmt::format(
          "<rect class=\"cell\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\">"
          "<title>{}, {}: {:.6g}</title></rect>\n",
          fmt_num(grid_x + double(c) * cell_w), fmt_num(grid_y + double(r) * cell_h),
          fmt_num(cell_w), fmt_num(cell_h), css_hex(colour_of(v)), xml_escape(row_texts[size_t(r)]),
          xml_escape(col_texts[size_t(c)]), v);
    }
  s += "</g>\n";
  if (cell_text) {
    s += fmt::format(
        "<g class=\"cell-text\" font-size=\"{}\" text-anchor=\"middle\" "
        "dominant-baseline=\"central\" pointer-events=\"none\">\n",
        fmt_num(cell_font));
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c) {
        const double v = m.values[size_t(r * C + c)];
        s += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>\n",
                         fmt_num(grid_x + (double(c) + 0.5) * cell_w),
                         fmt_num(grid_y + (double(r) + 0.5) * cell_h),
                         luminance(colour_of(v)) > 0.35 ? "#000000" : "#ffffff", text_of(v));
      }
    s += "</g>\n";
  }

  // Colour bar with its min / max labels and caption.
  s += "<g class=\"colour-bar\">\n";
  if (!m.value_caption.empty())
    s += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", fmt_num(bar_x), fmt_num(bar_y - 5),
                     xml_escape(m.value_caption));
  s += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"url(#sy-scale)\" "
      "stroke=\"#666\" stroke-width=\"0.5\"/>\n",
      fmt_num(bar_x), fmt_num(bar_y), fmt_num(kBarWidth), fmt_num(bar_h));
  s += fmt::format("<text class=\"scale-max\" x=\"{}\" y=\"{}\">{}</text>\n",
                   fmt_num(bar_x + kBarWidth + 4), fmt_num(bar_y + kLabelSize - 1), hi_text);
  s += fmt::format("<text class=\"scale-min\" x=\"{}\" y=\"{}\">{}</text>\n",
                   fmt_num(bar_x + kBarWidth + 4), fmt_num(bar_y + bar_h), lo_text);
  s += "</g>\n";
  if (!m.footer.empty())
    s += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"#333\">{}</text>\n", fmt_num(kMargin),
                     fmt_num(footer_y - 4), xml_escape(m.footer));
  s += "</svg>\n";
  return s;
}

void write_heatmap_svg(const std::string& path, const Heatmap& map) {
  const std::string svg = heatmap_svg(map);  // validate before touching the file system
  io::write_text_file_atomic(path, svg);
}

}  // namespace sy::report
