// Minimal argument parser for the glmvoice tools: `--name value`, `--flag`, `-o value` and
// positionals. Unknown options are an error so typos do not pass silently.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace glmvoice::tools {

class Args {
 public:
  // `flags` are options without a value; every other `--x` takes the next argument.
  Args(int argc, char** argv, int first, const std::set<std::string>& flags);

  bool has(const std::string& name) const;
  std::string get(const std::string& name) const;  // throws if absent
  std::string get(const std::string& name, const std::string& fallback) const;
  int64_t get_int(const std::string& name, int64_t fallback) const;
  double get_double(const std::string& name, double fallback) const;
  const std::vector<std::string>& positionals() const { return positionals_; }
  std::string positional(size_t index, const std::string& what) const;  // throws if absent
  // Throws naming the first option not in `known`.
  void check_known(const std::set<std::string>& known) const;

 private:
  std::map<std::string, std::string> options_;
  std::vector<std::string> positionals_;
};

}  // namespace glmvoice::tools
