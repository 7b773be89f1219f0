// Layout shared by the SVG writers, in SVG user units (pixels). Text widths are estimated from
// a monospace advance of 0.62 em, so labels are placed without measuring fonts (no fonts are
// embedded).
#pragma once

#include <cstddef>

namespace sy::report::svg {

inline constexpr double kMargin = 14;
inline constexpr double kTitleSize = 15;
inline constexpr double kLabelSize = 11;

inline double text_width(size_t chars, double font_size) {
  return double(chars) * 0.62 * font_size;
}

}  // namespace sy::report::svg
