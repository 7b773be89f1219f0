// Internals of the checkpoint layout (train/checkpoint.h) shared by its saving, loading and
// earlier-layout code; not an interface for other modules.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "train/adamw.h"
#include "train/params.h"

namespace sy::train::layout {

namespace fs = std::filesystem;

inline constexpr const char* kStateFile = "trainer_state.json";  // the manifest
inline constexpr const char* kFormat = "switchyard-sharded-v1";
inline constexpr const char* kIndexFile = "model.safetensors.index.json";

std::string shape_str(const std::vector<int64_t>& shape);  // "[8, 4]"
void fsync_dir(const fs::path& dir);  // makes a directory's entries durable; sy::Error if not
// Absolute, normalised, without a trailing '/' (whose empty file name would put siblings inside).
fs::path checkpoint_path(const std::string& dir);
// "w000012-L3-E5.safetensors", or a temp file a write of one left ("....tmp.XXXXXX").
bool is_shard_file(const std::string& name);

// The earlier layout: model.safetensors + optimizer.safetensors, a manifest without "checkpoint".
nlohmann::json load_legacy(const std::string& dir_arg, const fs::path& dir, ParamSet& params,
                           AdamW& optimizer);

}  // namespace sy::train::layout
