// Target: model.safetensors.index.json of a sharded checkpoint (the shards themselves are a
// fixed valid two-shard checkpoint), through TensorStore::open.
#include <filesystem>

#include "io/safetensors.h"
#include "scratch.h"
#include "target.h"
#include "targets/seeds_common.h"

namespace sy::fuzz {
namespace {

SeedCheckpoint sharded() {
  SeedCheckpoint s = seed_checkpoints().front();
  s.name = "sharded";
  s.spec.num_shards = 2;
  s.spec.tokenizer = "none";
  return s;
}

const std::string& shard_dir() {
  static const std::string dir = write_seed_checkpoint(sharded());
  return dir;
}

}  // namespace

void run_one(std::string_view bytes) {
  const std::string& dir = shard_dir();
  write_file_in(dir, "model.safetensors.index.json", bytes);
  const io::TensorStore store = io::TensorStore::open(dir);
  for (const auto& [name, t] : store.all()) (void)store.get(name).nbytes;
  (void)store.total_bytes();
}

void write_seeds(const std::string& dir) {
  write_seed(dir, "index.json", read_file(shard_dir() + "/model.safetensors.index.json"));
}

}  // namespace sy::fuzz
