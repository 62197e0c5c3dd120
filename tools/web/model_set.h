// Where the three models are and how the elements load them (device, dtype): the same
// values for every session, so the elements' model cache shares one loaded copy.
#pragma once

#include <string>

namespace glmvoice::web {

struct ModelSet {
  std::string tokenizer_dir;
  std::string llm_dir;
  std::string decoder_dir;
  std::string device;  // "" = element default
  std::string dtype;   // "" = element default
  bool tiny = false;   // tiny random models made by glmvoice-mkmodel (they speak noise)
};

// The three Hugging Face repositories side by side under `model_dir`; throws naming the
// missing one.
ModelSet model_set_from_dir(const std::string& model_dir);

// Tiny random models under `tiny_dir` (made with glmvoice-mkmodel when absent, seeds as
// pipelines/common.sh so the scripts and the server share them); throws when mkmodel fails.
ModelSet model_set_tiny(const std::string& tiny_dir, const std::string& mkmodel_path);

// Properties an element gets for these models: ` model-path="..." [device=..] [dtype=..]`.
std::string element_model_properties(const ModelSet& models, const std::string& model_dir);

}  // namespace glmvoice::web
