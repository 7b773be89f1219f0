#include "model/checkpoint_rewrite.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "io/file_util.h"
#include "model/config.h"
#include "util/error.h"

namespace sy::model {

namespace fs = std::filesystem;

void RewrittenTensors::keep(const io::TensorInfo& t) {
  tensors.push_back({t.name, t.dtype_name, t.shape, t.data, t.nbytes});
}

uint8_t* RewrittenTensors::add(const std::string& name, const io::TensorInfo& like,
                               std::vector<int64_t> shape, size_t nbytes) {
  owned.emplace_back(nbytes);
  tensors.push_back({name, like.dtype_name, std::move(shape), owned.back().data(), nbytes});
  return owned.back().data();
}

const io::TensorInfo& tensor_with_shape(const io::TensorStore& store, const std::string& name,
                                        std::vector<int64_t> shape) {
  const io::TensorInfo& t = store.get(name);
  if (t.shape != shape)
    fail("tensor '{}' has shape {} but config.json implies [{}]", name, t.shape_str(),
         fmt::join(shape, ", "));
  if (!t.dtype) fail("tensor '{}' has dtype {}, which cannot be rewritten", name, t.dtype_name);
  return t;
}

void scale_element(DType dtype, const uint8_t* src, uint8_t* dst, float scale) {
  const size_t n = dtype_size(dtype);
  if (scale == 1.0f) {
    std::memcpy(dst, src, n);
    return;
  }
  switch (dtype) {
    case DType::F32: {
      float v;
      std::memcpy(&v, src, 4);
      v *= scale;
      std::memcpy(dst, &v, 4);
      return;
    }
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, src, 2);
      h = f32_to_bf16(bf16_to_f32(h) * scale);
      std::memcpy(dst, &h, 2);
      return;
    }
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, src, 2);
      h = f32_to_f16(f16_to_f32(h) * scale);
      std::memcpy(dst, &h, 2);
      return;
    }
    case DType::Q8_0:  // block types scale per block, not per element
    case DType::Q4_0:
    case DType::Q4_K:
    case DType::Q6_K:
    case DType::MXFP4:
    case DType::I8_ROW:
      break;
  }
  fail("cannot scale dtype {}", dtype_name(dtype));
}

void write_rewritten_model(const std::string& source_dir, const std::string& out_dir,
                           const nlohmann::json& config, const RewrittenTensors& out,
                           const std::vector<std::pair<std::string, std::string>>& extra,
                           bool model_files_only) {
  const fs::path tmp = out_dir + ".partial-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp);
    io::write_text_file_atomic((tmp / "config.json").string(), config.dump(2) + "\n");
    io::write_safetensors((tmp / "model.safetensors").string(), out.tensors);
    for (const auto& [name, bytes] : extra)
      io::write_text_file_atomic((tmp / name).string(), bytes);
    for (const fs::directory_entry& f : fs::directory_iterator(source_dir)) {
      const std::string name = f.path().filename().string();
      if (!f.is_regular_file() || name == "config.json" || name.ends_with(".safetensors") ||
          name == "model.safetensors.index.json" ||
          (model_files_only && name == "trainer_state.json"))
        continue;
      fs::copy_file(f.path(), tmp / name);
    }
    fs::rename(tmp, out_dir);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    fail("cannot write '{}': {}", out_dir, e.what());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

int64_t export_model(const std::string& model_dir, const std::string& out_dir) {
  if (fs::exists(out_dir)) fail("'{}' exists; export writes a new folder", out_dir);
  const std::string config_path = model_dir + "/config.json";
  const nlohmann::json config = nlohmann::json::parse(io::read_text_file(config_path));
  (void)parse_config(config.dump(), config_path);  // a model Switchyard can load
  const io::TensorStore store = io::TensorStore::open(model_dir);
  RewrittenTensors out;
  for (const auto& [name, t] : store.all()) out.keep(*t);
  write_rewritten_model(model_dir, out_dir, config, out, {}, /*model_files_only=*/true);
  return int64_t(out.tensors.size());
}

}  // namespace sy::model
