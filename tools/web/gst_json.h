// GstStructure -> JSON for the page (element messages such as glmvoicellm-turn): ints,
// doubles, strings, booleans and arrays/lists of them; other types become their string form.
#pragma once

#include <gst/gst.h>

#include <nlohmann/json.hpp>

namespace glmvoice::web {

nlohmann::json structure_to_json(const GstStructure* structure);

}  // namespace glmvoice::web
