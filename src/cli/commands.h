// The switchyard subcommands. Each registers its flags (with help text) on the app and
// runs from the callback; errors surface as sy::Error and are printed by main().
#pragma once

#include <CLI/CLI.hpp>

namespace sy::cli {

void register_generate(CLI::App& app);
void register_score(CLI::App& app);
void register_inspect(CLI::App& app);
void register_make_tiny(CLI::App& app);
void register_bench(CLI::App& app);
void register_replay(CLI::App& app);
void register_train(CLI::App& app);
void register_supervise(CLI::App& app);
void register_partition(CLI::App& app);
void register_export(CLI::App& app);
void register_quantize(CLI::App& app);
void register_profile_neurons(CLI::App& app);
void register_tokenize(CLI::App& app);

}  // namespace sy::cli
