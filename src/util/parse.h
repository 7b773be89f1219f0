// Strict parsing of one value from text (metadata, flags): the whole text must be the value.
// sy::Error "<where>: '<text>' is not ..." otherwise.
#pragma once

#include <cstdint>
#include <string>

namespace sy {

int64_t parse_int(const std::string& text, const std::string& where);
double parse_double(const std::string& text, const std::string& where);  // finite
bool parse_bool(const std::string& text, const std::string& where);      // true/false/1/0

}  // namespace sy
