// Heatmaps a person can open: a matrix drawn as a standalone SVG (no external fonts, scripts
// or styles; any browser shows it) with a title, row and column labels, a perceptual
// sequential colour scale (viridis) with its colour bar, optional values in the cells and an
// optional column of per-row notes. Used for expert-load maps (layers x experts).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sy::report {

struct Heatmap {
  std::string title;
  int64_t num_rows = 0;
  int64_t num_cols = 0;
  std::vector<double> values;                  // [num_rows, num_cols] row-major; finite
  std::vector<std::string> row_labels;         // [num_rows] ("layer 3"), or empty: "0", "1", ...
  std::vector<std::string> col_labels;         // [num_cols] ("e12"), or empty: "0", "1", ...
  std::vector<std::string> row_notes;          // [num_rows] right-hand annotations, or empty: none
  std::string notes_header;                    // caption above the notes column (optional)
  std::string value_caption;                   // caption of the colour bar, e.g. "pairs"
  std::string footer;                          // one line under the map (optional)
  bool cell_text = true;                       // print each value in its cell when it fits
  int precision = -1;                          // digits after the point; -1: integers if all are
  std::optional<double> scale_min, scale_max;  // colour range; default: the data's min/max
};

// The SVG document. Throws sy::Error naming the problem when the matrix is empty, a value
// is NaN or infinite, the value count is not rows x cols, or a label list has the wrong size.
std::string heatmap_svg(const Heatmap& map);

// Writes heatmap_svg(map) to `path` atomically: a failure leaves any existing file intact.
void write_heatmap_svg(const std::string& path, const Heatmap& map);

// The colour scale: t in [0, 1] (clamped) -> 8-bit sRGB, a polynomial fit of matplotlib's
// viridis (dark purple -> blue -> green -> yellow; lightness increases monotonically).
std::array<uint8_t, 3> viridis(double t);
std::string css_hex(const std::array<uint8_t, 3>& rgb);  // "#440154"

// Escapes &, <, >, " and ' for XML text and attributes, and replaces characters XML 1.0
// forbids (control characters other than tab / newline / carriage return) with '?'.
std::string xml_escape(const std::string& text);

}  // namespace sy::report
