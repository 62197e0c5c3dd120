#include "args.h"

#include <cstdint>
#include <stdexcept>

namespace glmvoice::tools {

Args::Args(int argc, char** argv, int first, const std::set<std::string>& flags) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-o") arg = "--out";
    if (arg.size() > 2 && arg.rfind("--", 0) == 0) {
      std::string name = arg.substr(2);
      auto eq = name.find('=');
      if (eq != std::string::npos) {
        options_[name.substr(0, eq)] = name.substr(eq + 1);
      } else if (flags.count(name)) {
        options_[name] = "1";
      } else {
        if (i + 1 >= argc) throw std::runtime_error("option --" + name + " needs a value");
        options_[name] = argv[++i];
      }
    } else {
      positionals_.push_back(arg);
    }
  }
}

bool Args::has(const std::string& name) const { return options_.count(name) != 0; }

std::string Args::get(const std::string& name) const {
  auto it = options_.find(name);
  if (it == options_.end()) throw std::runtime_error("missing option --" + name);
  return it->second;
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
  auto it = options_.find(name);
  return it == options_.end() ? fallback : it->second;
}

int64_t Args::get_int(const std::string& name, int64_t fallback) const {
  if (!has(name)) return fallback;
  try {
    size_t used = 0;
    int64_t value = std::stoll(get(name), &used);
    if (used == get(name).size()) return value;
  } catch (const std::exception&) {
  }
  throw std::runtime_error("option --" + name + ": not an integer: " + get(name));
}

double Args::get_double(const std::string& name, double fallback) const {
  if (!has(name)) return fallback;
  try {
    size_t used = 0;
    double value = std::stod(get(name), &used);
    if (used == get(name).size()) return value;
  } catch (const std::exception&) {
  }
  throw std::runtime_error("option --" + name + ": not a number: " + get(name));
}

std::string Args::positional(size_t index, const std::string& what) const {
  if (index >= positionals_.size()) throw std::runtime_error("missing argument " + what);
  return positionals_[index];
}

void Args::check_known(const std::set<std::string>& known) const {
  for (const auto& [name, value] : options_) {
    if (!known.count(name)) throw std::runtime_error("unknown option --" + name);
  }
}

}  // namespace glmvoice::tools
