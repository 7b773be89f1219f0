// JSON from untrusted files: parsing with a nesting limit enforced while parsing, and values
// quoted in error messages as short excerpts.
#pragma once

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "util/error.h"

namespace sy {

// A value as an error message may quote it: scalars (strings cut to 40 characters), never a
// whole nested array or object (a hostile file's value can be huge or deeply nested).
inline std::string excerpt(const nlohmann::json& v) {
  if (v.is_object()) return "an object";
  if (v.is_array()) return fmt::format("an array of {}", v.size());
  if (v.is_string()) {
    const std::string& t = v.get_ref<const std::string&>();
    const std::string cut = t.size() > 40 ? t.substr(0, 40) + "..." : t;
    return nlohmann::json(cut).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  }
  return v.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
}

// A string from a file as a message may quote it: at most `max` bytes, escaped as in JSON
// (control bytes and invalid UTF-8 cannot garble the terminal), in single quotes as the
// engine's other messages quote names.
inline std::string excerpt_text(std::string_view text, size_t max = 40) {
  const std::string cut =
      text.size() > max ? std::string(text.substr(0, max)) + "..." : std::string(text);
  const std::string quoted =
      nlohmann::json(cut).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  return "'" + quoted.substr(1, quoted.size() - 2) + "'";
}

// nlohmann's message for a parse error, cut short: it quotes the token being read, which a
// hostile file can make megabytes long.
inline std::string json_error_message(const nlohmann::json::exception& e) {
  const std::string what = e.what();
  return what.size() > 200 ? what.substr(0, 200) + "..." : what;
}

// json::parse with a nesting limit enforced while parsing (no recursion on hostile input
// afterwards); sy::Error naming `origin` when the text is not JSON or nests too deeply.
inline nlohmann::json parse_json_bounded(const std::string& text, const std::string& origin,
                                         int max_depth = 64) {
  try {
    return nlohmann::json::parse(
        text, [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
          if (depth > max_depth) fail("{}: JSON nests deeper than {} levels", origin, max_depth);
          return true;
        });
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", origin, json_error_message(e));
  }
}

}  // namespace sy
