// Typed access to tokenizer.json fields with errors that name the field and the file.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "util/error.h"
#include "util/json_bounded.h"

namespace sy {

using json = nlohmann::json;

struct JsonCtx {
  std::string origin;  // the file (or other source) being parsed

  [[noreturn]] void error(const std::string& what) const {
    // Messages quote fields of the file: never let one grow without bound.
    fail("tokenizer.json: {} in {}", what.size() > 400 ? what.substr(0, 400) + "..." : what,
         origin);
  }

  const json& require(const json& obj, const char* key, const std::string& path) const {
    if (!obj.is_object()) error(fmt::format("'{}' must be an object", path));
    auto it = obj.find(key);
    if (it == obj.end()) error(fmt::format("missing field '{}.{}'", path, key));
    return *it;
  }
  // Absent and null both read as the default, as HF's serde defaults do.
  std::string str(const json& obj, const char* key, const std::string& path,
                  const char* def = nullptr) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) {
      if (def == nullptr) error(fmt::format("missing field '{}.{}'", path, key));
      return def;
    }
    if (!it->is_string()) error(fmt::format("field '{}.{}' must be a string", path, key));
    return it->get<std::string>();
  }
  bool boolean(const json& obj, const char* key, const std::string& path, bool def) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return def;
    if (!it->is_boolean()) error(fmt::format("field '{}.{}' must be a boolean", path, key));
    return it->get<bool>();
  }
  int64_t integer(const json& obj, const char* key, const std::string& path,
                  std::optional<int64_t> def = {}) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) {
      if (!def) error(fmt::format("missing field '{}.{}'", path, key));
      return *def;
    }
    if (!it->is_number_integer()) error(fmt::format("field '{}.{}' must be an integer", path, key));
    return it->get<int64_t>();
  }
  // The "type" of a component object, e.g. "Split".
  std::string type(const json& obj, const std::string& path) const {
    if (!obj.is_object()) error(fmt::format("'{}' must be an object or null", path));
    return str(obj, "type", path);
  }
};

}  // namespace sy
