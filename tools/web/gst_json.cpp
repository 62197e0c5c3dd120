#include "gst_json.h"

namespace glmvoice::web {
namespace {

nlohmann::json value_to_json(const GValue* value) {
  if (GST_VALUE_HOLDS_ARRAY(value) || GST_VALUE_HOLDS_LIST(value)) {
    const bool is_array = GST_VALUE_HOLDS_ARRAY(value);
    const guint n = is_array ? gst_value_array_get_size(value) : gst_value_list_get_size(value);
    nlohmann::json items = nlohmann::json::array();
    for (guint i = 0; i < n; ++i)
      items.push_back(value_to_json(is_array ? gst_value_array_get_value(value, i)
                                             : gst_value_list_get_value(value, i)));
    return items;
  }
  switch (G_VALUE_TYPE(value)) {
    case G_TYPE_INT: return g_value_get_int(value);
    case G_TYPE_UINT: return g_value_get_uint(value);
    case G_TYPE_INT64: return g_value_get_int64(value);
    case G_TYPE_UINT64: return g_value_get_uint64(value);
    case G_TYPE_DOUBLE: return g_value_get_double(value);
    case G_TYPE_FLOAT: return g_value_get_float(value);
    case G_TYPE_BOOLEAN: return static_cast<bool>(g_value_get_boolean(value));
    case G_TYPE_STRING: {
      const gchar* s = g_value_get_string(value);
      return s ? std::string(s) : std::string();
    }
    default: break;
  }
  gchar* text = gst_value_serialize(value);
  nlohmann::json out = text ? std::string(text) : std::string();
  g_free(text);
  return out;
}

}  // namespace

nlohmann::json structure_to_json(const GstStructure* structure) {
  nlohmann::json out = nlohmann::json::object();
  if (!structure) return out;
  const gint n = gst_structure_n_fields(structure);
  for (gint i = 0; i < n; ++i) {
    const gchar* name = gst_structure_nth_field_name(structure, i);
    out[name] = value_to_json(gst_structure_get_value(structure, name));
  }
  return out;
}

}  // namespace glmvoice::web
