// SVG heatmaps (src/report/svg_heatmap.h): the document is well-formed XML (checked here by a
// small tag-balance parser and, independently, by Python's xml.etree when /usr/bin/python3
// exists), has exactly rows x cols cells whose colours get lighter as values grow, escapes
// labels, thins column labels, and rejects NaN / empty input without touching the file.
#include <gtest/gtest.h>

#include <stdlib.h>
#include "temp_dir.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "report/svg_heatmap.h"
#include "util/error.h"

namespace sy::report {
namespace {

namespace fs = std::filesystem;

// Checks that every tag is closed in order and that '&' only starts an entity. Returns an
// empty string when the document is balanced, else what is wrong.
std::string check_balanced(const std::string& doc) {
  std::vector<std::string> stack;
  size_t pos = 0;
  int roots = 0;
  while ((pos = doc.find('<', pos)) != std::string::npos) {
    const size_t end = doc.find('>', pos);
    if (end == std::string::npos) return "unterminated tag at byte " + std::to_string(pos);
    std::string tag = doc.substr(pos + 1, end - pos - 1);
    pos = end + 1;
    if (tag.empty()) return "empty tag";
    if (tag[0] == '?' || tag[0] == '!') continue;  // declaration, comment
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name)
        return "closing </" + name + "> does not match <" + (stack.empty() ? "" : stack.back()) +
               ">";
      stack.pop_back();
      continue;
    }
    if (tag.find('<') != std::string::npos) return "'<' inside a tag: " + tag;
    const bool self_closing = tag.back() == '/';
    const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
    if (stack.empty()) ++roots;
    if (!self_closing) stack.push_back(name);
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  if (roots != 1) return std::to_string(roots) + " root elements";
  static const std::regex bad_amp("&(?!(amp|lt|gt|quot|apos|#[0-9]+);)");
  if (std::regex_search(doc, bad_amp)) return "bare '&'";
  return "";
}

int count(const std::string& doc, const std::string& needle) {
  int n = 0;
  for (size_t pos = doc.find(needle); pos != std::string::npos; pos = doc.find(needle, pos + 1))
    ++n;
  return n;
}

// Fill colours of the cells, in document order (row-major).
std::vector<std::string> cell_fills(const std::string& doc) {
  static const std::regex cell("<rect class=\"cell\"[^>]* fill=\"(#[0-9a-f]{6})\"");
  std::vector<std::string> fills;
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), cell); it != std::sregex_iterator();
       ++it)
    fills.push_back((*it)[1]);
  return fills;
}

double luminance_of(const std::string& hex) {
  double lum = 0;
  const double w[3] = {0.2126, 0.7152, 0.0722};
  for (int ch = 0; ch < 3; ++ch) {
    const double u = std::stoi(hex.substr(1 + 2 * size_t(ch), 2), nullptr, 16) / 255.0;
    lum += w[ch] * (u <= 0.04045 ? u / 12.92 : std::pow((u + 0.055) / 1.055, 2.4));
  }
  return lum;
}

Heatmap load_map(int rows, int cols) {
  Heatmap m;
  m.title = "Expert load, tiny model";
  m.num_rows = rows;
  m.num_cols = cols;
  for (int r = 0; r < rows; ++r) {
    m.row_labels.push_back("layer " + std::to_string(r));
    m.row_notes.push_back("max/mean 1." + std::to_string(r) + ", DT 0.0%");
  }
  for (int c = 0; c < cols; ++c) m.col_labels.push_back("e" + std::to_string(c));
  for (int i = 0; i < rows * cols; ++i) m.values.push_back(double((i * 37) % 101));
  m.notes_header = "balance";
  m.value_caption = "pairs";
  return m;
}

void expect_error(const Heatmap& m, const std::vector<std::string>& needles) {
  try {
    heatmap_svg(m);
    ADD_FAILURE() << "no error for a bad heatmap";
  } catch (const Error& e) {
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "message lacks '" << n << "': " << e.what();
  }
}

using sy::testing::TempDir;

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(SvgHeatmap, BalancedWithOneCellPerValue) {
  for (auto [rows, cols] : {std::pair{1, 1}, {3, 8}, {24, 64}, {2, 300}}) {
    const std::string doc = heatmap_svg(load_map(rows, cols));
    EXPECT_EQ(check_balanced(doc), "") << rows << "x" << cols;
    EXPECT_EQ(count(doc, "<rect class=\"cell\""), rows * cols) << rows << "x" << cols;
    EXPECT_EQ(doc.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 200) != std::string::npos,
              true);
    EXPECT_EQ(count(doc, "href"), 0) << "a standalone file refers to nothing outside";
    EXPECT_EQ(count(doc, "<script"), 0);
    EXPECT_EQ(count(doc, "@import"), 0);
  }
}

TEST(SvgHeatmap, ColoursGetLighterAsValuesGrow) {
  Heatmap m;
  m.num_rows = 1;
  m.num_cols = 100;
  for (int c = 0; c < 100; ++c) m.values.push_back(-3.0 + 0.25 * c);
  const std::vector<std::string> fills = cell_fills(heatmap_svg(m));
  ASSERT_EQ(fills.size(), 100u);
  for (size_t i = 1; i < fills.size(); ++i)
    EXPECT_GT(luminance_of(fills[i]), luminance_of(fills[i - 1]))
        << "cell " << i << " (" << fills[i] << ") vs " << fills[i - 1];
  // The ends of the scale are viridis' ends (#440154 dark purple, #fde725 yellow) within the fit's
  // error.
  auto near = [](const std::string& hex, int r, int g, int b) {
    const int got[3] = {std::stoi(hex.substr(1, 2), nullptr, 16),
                        std::stoi(hex.substr(3, 2), nullptr, 16),
                        std::stoi(hex.substr(5, 2), nullptr, 16)};
    return std::abs(got[0] - r) <= 6 && std::abs(got[1] - g) <= 6 && std::abs(got[2] - b) <= 6;
  };
  EXPECT_TRUE(near(fills.front(), 0x44, 0x01, 0x54)) << fills.front();
  EXPECT_TRUE(near(fills.back(), 0xfd, 0xe7, 0x25)) << fills.back();
  // Fine steps: never darker by more than 8-bit rounding can explain.
  for (int i = 1; i <= 1000; ++i)
    EXPECT_GE(luminance_of(css_hex(viridis(i / 1000.0))) + 1e-3,
              luminance_of(css_hex(viridis((i - 1) / 1000.0))));
}

TEST(SvgHeatmap, ScaleLabelsAndConstantMatrix) {
  Heatmap m = load_map(2, 3);
  m.values = {5, 5, 5, 5, 5, 5};
  const std::string doc = heatmap_svg(m);
  EXPECT_EQ(check_balanced(doc), "");
  EXPECT_NE(doc.find("class=\"scale-min\""), std::string::npos);
  const auto fills = cell_fills(doc);
  ASSERT_EQ(fills.size(), 6u);
  for (const auto& f : fills) EXPECT_EQ(f, fills[0]);

  m.values = {0.5, 1.25, 2, 3, 4, 7.75};
  const std::string fractional = heatmap_svg(m);
  EXPECT_NE(fractional.find(">0.50</text>"), std::string::npos) << "min label with 2 decimals";
  EXPECT_NE(fractional.find(">7.75</text>"), std::string::npos) << "max label";
  m.scale_min = 0;
  m.scale_max = 10;
  EXPECT_NE(heatmap_svg(m).find(">10.0</text>"), std::string::npos)
      << "explicit scale max (one decimal at magnitude 10)";
}

TEST(SvgHeatmap, LabelsAreEscaped) {
  Heatmap m = load_map(2, 2);
  m.title = "R&D <loads> \"quoted\"";
  m.row_labels[0] = "a & b";
  m.col_labels[1] = "<e1>";
  m.row_notes[1] = "x < y & z\x01";
  const std::string doc = heatmap_svg(m);
  EXPECT_EQ(check_balanced(doc), "");
  EXPECT_NE(doc.find("R&amp;D &lt;loads&gt; &quot;quoted&quot;"), std::string::npos);
  EXPECT_NE(doc.find(">a &amp; b<"), std::string::npos);
  EXPECT_NE(doc.find(">&lt;e1&gt;<"), std::string::npos);
  EXPECT_NE(doc.find(">x &lt; y &amp; z?<"), std::string::npos) << "control character replaced";
  EXPECT_EQ(doc.find("a & b"), std::string::npos);
}

TEST(SvgHeatmap, ManyColumnsThinLabelsAndDropCellText) {
  const std::string small = heatmap_svg(load_map(3, 8));
  EXPECT_EQ(count(small, ">e"), 8) << "every column labelled";
  EXPECT_EQ(count(small, "class=\"cell-text\""), 1) << "values printed in big cells";
  EXPECT_NE(small.find(">max/mean 1.2, DT 0.0%<"), std::string::npos) << "row notes";

  const std::string wide = heatmap_svg(load_map(24, 64));
  const int labels = count(wide, ">e");
  EXPECT_GE(labels, 8) << "enough labels to find an expert";
  EXPECT_LT(labels, 64) << "labels thinned so they do not overlap";
  EXPECT_NE(wide.find(">e0<"), std::string::npos);
  EXPECT_EQ(count(wide, "class=\"cell-text\""), 0) << "no values in 64-wide rows";
  // Thinned labels sit on a regular stride.
  std::regex label(">e([0-9]+)</text>");
  std::vector<int> ids;
  for (auto it = std::sregex_iterator(wide.begin(), wide.end(), label);
       it != std::sregex_iterator(); ++it)
    ids.push_back(std::stoi((*it)[1]));
  ASSERT_GE(ids.size(), 2u);
  for (size_t i = 1; i < ids.size(); ++i) EXPECT_EQ(ids[i] - ids[i - 1], ids[1] - ids[0]);

  Heatmap quiet = load_map(3, 8);
  quiet.cell_text = false;
  EXPECT_EQ(count(heatmap_svg(quiet), "class=\"cell-text\""), 0);
}

TEST(SvgHeatmap, BadInputIsAClearError) {
  Heatmap nan = load_map(3, 4);
  nan.values[6] = std::nan("");
  expect_error(nan, {"NaN", "layer 1", "e2", "Expert load"});
  Heatmap inf = load_map(3, 4);
  inf.values[0] = INFINITY;
  expect_error(inf, {"infinite"});
  Heatmap empty;
  expect_error(empty, {"empty"});
  Heatmap no_cols = load_map(3, 4);
  no_cols.num_cols = 0;
  no_cols.values.clear();
  no_cols.col_labels.clear();
  expect_error(no_cols, {"empty", "0 columns"});
  Heatmap short_values = load_map(3, 4);
  short_values.values.pop_back();
  expect_error(short_values, {"11 values", "3 rows x 4 columns"});
  Heatmap labels = load_map(3, 4);
  labels.col_labels.pop_back();
  expect_error(labels, {"3 column labels", "4 columns"});
  Heatmap notes = load_map(3, 4);
  notes.row_notes.push_back("extra");
  expect_error(notes, {"4 row notes", "3 rows"});
  Heatmap scale = load_map(3, 4);
  scale.scale_min = 5;
  scale.scale_max = 5;
  expect_error(scale, {"minimum 5", "maximum 5"});
}

TEST(SvgHeatmap, WritesAtomicallyAndKeepsOldFileOnError) {
  TempDir dir;
  const std::string path = dir.file("load.svg");
  write_heatmap_svg(path, load_map(4, 16));
  const std::string first = read(path);
  EXPECT_EQ(first, heatmap_svg(load_map(4, 16)));
  Heatmap bad = load_map(4, 16);
  bad.values[3] = std::nan("");
  EXPECT_THROW(write_heatmap_svg(path, bad), Error);
  EXPECT_EQ(read(path), first) << "a failed write left the old file alone";
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(fs::path(path).parent_path())) ++entries, (void)e;
  EXPECT_EQ(entries, 1u) << "no temporary file left behind";
  EXPECT_THROW(write_heatmap_svg(dir.file("missing/dir/x.svg"), load_map(1, 1)), Error);
}

// Independent check: Python's XML parser accepts the document and finds rows x cols cells.
TEST(SvgHeatmap, PythonXmlParserAcceptsIt) {
  if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 not found";
  TempDir dir;
  Heatmap m = load_map(5, 70);
  m.title = "A & B <quoted>";
  m.row_labels[2] = "l<2>&";
  write_heatmap_svg(dir.file("m.svg"), m);
  const std::string script = dir.file("check.py");
  std::ofstream(script)
      << "import sys, xml.etree.ElementTree as ET\n"
         "root = ET.parse(sys.argv[1]).getroot()\n"
         "ns = '{http://www.w3.org/2000/svg}'\n"
         "assert root.tag == ns + 'svg', root.tag\n"
         "cells = [e for e in root.iter(ns + 'rect') if e.get('class') == 'cell']\n"
         "assert len(cells) == 5 * 70, len(cells)\n"
         "texts = [t.text for t in root.iter(ns + 'text')]\n"
         "assert 'A & B <quoted>' in texts, texts[:3]\n"
         "assert 'l<2>&' in texts\n";
  const std::string cmd = "/usr/bin/python3 " + script + " " + dir.file("m.svg");
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

}  // namespace
}  // namespace sy::report
