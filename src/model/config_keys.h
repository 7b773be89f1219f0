// Typed access to a config.json object with errors that name the file and the key (the config
// reader and every family's declaration read through it).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "util/error.h"
#include "util/json_bounded.h"

namespace sy::model {

class Keys {
 public:
  Keys(const nlohmann::json& j, std::string origin) : j_(j), origin_(std::move(origin)) {}

  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

  int64_t integer(const char* key) const {
    if (!has(key)) fail("{}: missing required key '{}'", origin_, key);
    return integer_or(key, 0);
  }
  // A count that must fit comfortably in an int (experts, top-k, groups).
  int small_count(const char* key) const { return narrow(key, integer(key)); }
  int small_count_or(const char* key, int fallback) const {
    return narrow(key, integer_or(key, fallback));
  }
  int narrow(const char* key, int64_t v) const {
    if (v < 0 || v > (1 << 20)) fail("{}: key '{}' = {} is out of range", origin_, key, v);
    return int(v);
  }
  int64_t integer_or(const char* key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const nlohmann::json& v = j_[key];
    if (!v.is_number_integer())
      fail("{}: key '{}' must be an integer, got {}", origin_, key, excerpt(v));
    return v.get<int64_t>();
  }
  double number_or(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const nlohmann::json& v = j_[key];
    if (!v.is_number()) fail("{}: key '{}' must be a number, got {}", origin_, key, excerpt(v));
    return v.get<double>();
  }
  bool boolean_or(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const nlohmann::json& v = j_[key];
    if (!v.is_boolean())
      fail("{}: key '{}' must be true or false, got {}", origin_, key, excerpt(v));
    return v.get<bool>();
  }
  std::string string_or(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const nlohmann::json& v = j_[key];
    if (!v.is_string()) fail("{}: key '{}' must be a string, got {}", origin_, key, excerpt(v));
    return v.get<std::string>();
  }
  std::vector<int64_t> int_list_or_empty(const char* key) const {
    std::vector<int64_t> out;
    if (!has(key)) return out;
    const nlohmann::json& v = j_[key];
    if (v.is_number_integer()) return {v.get<int64_t>()};
    if (!v.is_array()) fail("{}: key '{}' must be an integer or a list of integers", origin_, key);
    for (const auto& x : v) {
      if (!x.is_number_integer()) fail("{}: key '{}' must hold integers", origin_, key);
      out.push_back(x.get<int64_t>());
    }
    return out;
  }
  std::vector<double> number_list_or_empty(const char* key) const {
    std::vector<double> out;
    if (!has(key)) return out;
    const nlohmann::json& v = j_[key];
    if (!v.is_array()) fail("{}: key '{}' must be a list of numbers", origin_, key);
    for (const auto& x : v) {
      if (!x.is_number()) fail("{}: key '{}' must hold numbers", origin_, key);
      out.push_back(x.get<double>());
    }
    return out;
  }
  const nlohmann::json& raw() const { return j_; }
  const std::string& origin() const { return origin_; }

 private:
  const nlohmann::json& j_;
  std::string origin_;
};

// sy::Error "<origin>: <what>" unless ok.
inline void require(bool ok, const std::string& origin, const std::string& what) {
  if (!ok) fail("{}: {}", origin, what);
}

}  // namespace sy::model
