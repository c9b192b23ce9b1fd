#include "harness/output.h"

#include <algorithm>
#include <cstdio>

namespace fs_bench {
namespace {

std::string num(double v, int precision) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", precision, v);
  return buf;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s)
    out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

void print_table(std::ostream& os, const std::vector<Result>& results) {
  const std::vector<std::string> head = {"routine", "model",     "shape",  "dtype",
                                         "mode",    "median us", "min us", "max us",
                                         "TB/s",    "% ceil",    "check"};
  std::vector<std::vector<std::string>> rows;
  for (const Result& r : results) {
    if (!r.error.empty()) {
      rows.push_back(
          {r.routine, r.model, r.shape, r.dtype, "-", "-", "-", "-", "-", "-", "ERROR " + r.error});
      continue;
    }
    rows.push_back({r.routine, r.model, r.shape, r.dtype, r.mode, num(r.timing.median_us, 2),
                    num(r.timing.min_us, 2), num(r.timing.max_us, 2), num(r.tbps, 3),
                    num(100 * r.ceiling_fraction, 1), r.check});
  }
  std::vector<size_t> width(head.size());
  for (size_t c = 0; c < head.size(); ++c) {
    width[c] = head[c].size();
    for (const auto& row : rows)
      width[c] = std::max(width[c], row[c].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    for (size_t c = 0; c < cells.size(); ++c) {
      const bool right = c >= 5 && c <= 9;
      std::string cell = cells[c];
      std::string padding(width[c] - cell.size(), ' ');
      os << (right ? padding + cell : cell + padding) << (c + 1 < cells.size() ? "  " : "\n");
    }
  };
  line(head);
  for (const auto& row : rows)
    line(row);
}

void write_json(std::ostream& os, const RunInfo& info, const std::vector<Result>& results) {
  os << "{\n  \"device\": \"" << json_escape(info.device) << "\",\n  \"flashserve\": \""
     << json_escape(info.library_version)
     << "\",\n  \"copy_ceiling_tbps\": " << num(info.ceiling_tbps, 4) << ",\n  \"results\": [\n";
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    os << "    {\"routine\": \"" << r.routine << "\", \"model\": \"" << json_escape(r.model)
       << "\", \"shape\": \"" << json_escape(r.shape) << "\", \"dtype\": \"" << r.dtype
       << "\", \"mode\": \"" << r.mode << "\", \"params\": {";
    size_t k = 0;
    for (const auto& [key, value] : r.params) {
      os << (k++ ? ", " : "") << "\"" << key << "\": \"" << json_escape(value) << "\"";
    }
    os << "}, \"median_us\": " << num(r.timing.median_us, 3)
       << ", \"min_us\": " << num(r.timing.min_us, 3) << ", \"max_us\": " << num(r.timing.max_us, 3)
       << ", \"samples\": " << r.timing.samples << ", \"bytes\": " << num(r.bytes, 0)
       << ", \"tbps\": " << num(r.tbps, 4)
       << ", \"ceiling_fraction\": " << num(r.ceiling_fraction, 4) << ", \"check\": \""
       << json_escape(r.check) << "\", \"error\": \"" << json_escape(r.error) << "\"}"
       << (i + 1 < results.size() ? ",\n" : "\n");
  }
  os << "  ]\n}\n";
}

void write_csv(std::ostream& os, const std::vector<Result>& results) {
  os << "routine,model,shape,dtype,mode,median_us,min_us,max_us,bytes,tbps,ceiling_fraction,check,"
        "error\n";
  for (const Result& r : results) {
    os << r.routine << "," << csv_field(r.model) << "," << csv_field(r.shape) << "," << r.dtype
       << "," << r.mode << "," << num(r.timing.median_us, 3) << "," << num(r.timing.min_us, 3)
       << "," << num(r.timing.max_us, 3) << "," << num(r.bytes, 0) << "," << num(r.tbps, 4) << ","
       << num(r.ceiling_fraction, 4) << "," << csv_field(r.check) << "," << csv_field(r.error)
       << "\n";
  }
}

}  // namespace fs_bench
