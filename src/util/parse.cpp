#include "util/parse.h"

#include <cmath>
#include <exception>

#include "util/error.h"

namespace sy {

int64_t parse_int(const std::string& text, const std::string& where) {
  try {
    size_t used = 0;
    const long long v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  fail("{}: '{}' is not an integer", where, text);
}

double parse_double(const std::string& text, const std::string& where) {
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  fail("{}: '{}' is not a finite number", where, text);
}

bool parse_bool(const std::string& text, const std::string& where) {
  if (text == "true" || text == "1") return true;
  if (text == "false" || text == "0") return false;
  fail("{}: '{}' is not true or false", where, text);
}

}  // namespace sy
