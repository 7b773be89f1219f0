// SVG line plots of loss curves: well-formed XML (a tag-balance check here and, when
// /usr/bin/python3 exists, Python's XML parser), one group per series with its legend entry, lines
// broken at NaN / infinite / non-positive-on-log points, "no data" for nothing drawable, points
// inside the plot area and in the right order, escaped names, clear errors for bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "report/svg_line_plot.h"
#include "temp_dir.h"
#include "util/error.h"

namespace sy::report {
namespace {

namespace fs = std::filesystem;
using sy::testing::TempDir;

// Every tag closed in order, one root, '&' only in entities; "" when well-formed.
std::string check_balanced(const std::string& doc) {
  std::vector<std::string> stack;
  int roots = 0;
  for (size_t pos = 0; (pos = doc.find('<', pos)) != std::string::npos;) {
    const size_t end = doc.find('>', pos);
    if (end == std::string::npos) return "unterminated tag";
    const std::string tag = doc.substr(pos + 1, end - pos - 1);
    pos = end + 1;
    if (tag.empty()) return "empty tag";
    if (tag[0] == '?' || tag[0] == '!') continue;
    if (tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1))
        return "mismatched </" + tag.substr(1) + ">";
      stack.pop_back();
      continue;
    }
    if (tag.find('<') != std::string::npos) return "'<' inside a tag";
    if (stack.empty()) ++roots;
    if (tag.back() != '/') stack.push_back(tag.substr(0, tag.find_first_of(" \t\n/")));
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  if (roots != 1) return std::to_string(roots) + " roots";
  if (std::regex_search(doc, std::regex("&(?!(amp|lt|gt|quot|apos|#[0-9]+);)"))) return "bare '&'";
  return "";
}

int count(const std::string& doc, const std::string& needle) {
  int n = 0;
  for (size_t pos = doc.find(needle); pos != std::string::npos; pos = doc.find(needle, pos + 1))
    ++n;
  return n;
}

std::vector<std::pair<double, double>> points_of(const std::string& polyline_points) {
  std::vector<std::pair<double, double>> pts;
  std::istringstream in(polyline_points);
  std::string pair;
  while (in >> pair)
    pts.push_back(
        {std::stod(pair.substr(0, pair.find(','))), std::stod(pair.substr(pair.find(',') + 1))});
  return pts;
}

std::vector<std::string> polylines(const std::string& doc) {
  std::vector<std::string> out;
  static const std::regex re("<polyline[^>]* points=\"([^\"]*)\"");
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), re); it != std::sregex_iterator();
       ++it)
    out.push_back((*it)[1]);
  return out;
}

// fmt writes non-finite numbers as "nan" / "inf": none may reach a coordinate.
bool has_non_finite(const std::string& doc) {
  return std::regex_search(doc, std::regex("\\b-?(nan|inf)\\b"));
}

LineSeries series(std::string name, std::vector<double> x, std::vector<double> y) {
  LineSeries s;
  s.name = std::move(name);
  s.x = std::move(x);
  s.y = std::move(y);
  return s;
}

LinePlot loss_plot() {
  LinePlot p;
  p.title = "Training loss";
  LineSeries train = series("train", {}, {}), val = series("val", {}, {});
  val.dashed = true;
  for (int s = 1; s <= 200; ++s) {
    train.x.push_back(s);
    train.y.push_back(2.0 + 6.0 * std::exp(-s / 40.0));
    if (s % 25 == 0) {
      val.x.push_back(s);
      val.y.push_back(2.2 + 6.0 * std::exp(-s / 40.0));
    }
  }
  p.series = {train, val};
  return p;
}

TEST(SvgLinePlot, SeriesLegendTicksAndOrder) {
  const std::string doc = line_plot_svg(loss_plot());
  EXPECT_EQ(check_balanced(doc), "");
  EXPECT_EQ(count(doc, "<g class=\"series\""), 2);
  EXPECT_EQ(count(doc, "class=\"legend-entry\""), 2);
  EXPECT_NE(doc.find(">train  2.0"), std::string::npos) << "legend: name and last value";
  EXPECT_NE(doc.find(">val  "), std::string::npos);
  EXPECT_NE(doc.find("stroke-dasharray"), std::string::npos) << "dashed val";
  EXPECT_NE(doc.find(">Training loss</text>"), std::string::npos);
  EXPECT_NE(doc.find("class=\"x-label\""), std::string::npos);
  EXPECT_NE(doc.find(">step</text>"), std::string::npos);
  EXPECT_NE(doc.find(">loss</text>"), std::string::npos);
  EXPECT_GE(count(doc, "<text x="), 6) << "tick labels";
  EXPECT_EQ(count(doc, "href"), 0);
  EXPECT_EQ(count(doc, "<script"), 0);
  EXPECT_FALSE(has_non_finite(doc));

  const auto lines = polylines(doc);
  ASSERT_EQ(lines.size(), 2u);
  const auto train = points_of(lines[0]);
  ASSERT_EQ(train.size(), 200u);
  std::smatch area;
  ASSERT_TRUE(std::regex_search(doc, area,
                                std::regex("class=\"plot-area\" x=\"([-0-9.]+)\" y=\"([-0-9.]+)\" "
                                           "width=\"([-0-9.]+)\" height=\"([-0-9.]+)\"")));
  const double ax = std::stod(area[1]), ay = std::stod(area[2]), aw = std::stod(area[3]),
               ah = std::stod(area[4]);
  for (size_t i = 0; i < train.size(); ++i) {
    EXPECT_GE(train[i].first, ax - 0.05);
    EXPECT_LE(train[i].first, ax + aw + 0.05);
    EXPECT_GE(train[i].second, ay - 0.05);
    EXPECT_LE(train[i].second, ay + ah + 0.05);
    if (i > 0) {
      EXPECT_GT(train[i].first, train[i - 1].first) << "x grows with the step";
      EXPECT_GE(train[i].second, train[i - 1].second) << "a falling loss goes down the page";
    }
  }
  EXPECT_NEAR(train.front().first, ax, 0.05) << "x axis spans the steps";
  EXPECT_NEAR(train.back().first, ax + aw, 0.05);
}

TEST(SvgLinePlot, NanAndEmptySeriesDoNotBreakIt) {
  LinePlot p = loss_plot();
  p.series[0].y[50] = NAN;
  p.series[0].y[52] = INFINITY;  // leaves point 51 alone: a dot
  p.series.push_back(series("empty", {}, {}));
  p.series.push_back(series("diverged", {1, 2, 3}, {NAN, NAN, NAN}));
  const std::string doc = line_plot_svg(p);
  EXPECT_EQ(check_balanced(doc), "");
  EXPECT_EQ(count(doc, "<g class=\"series\""), 4);
  EXPECT_EQ(polylines(doc).size(), 3u) << "train split in two at the gap, plus val";
  EXPECT_EQ(count(doc, "<circle"), 1) << "the lone point between the gaps";
  EXPECT_EQ(count(doc, "(no data)"), 2);
  EXPECT_FALSE(has_non_finite(doc));

  LinePlot nothing;
  nothing.series = {series("train", {}, {}), series("val", {1}, {NAN})};
  const std::string empty_doc = line_plot_svg(nothing);
  EXPECT_EQ(check_balanced(empty_doc), "");
  EXPECT_NE(empty_doc.find(">no data</text>"), std::string::npos);
  LinePlot no_series;
  EXPECT_EQ(check_balanced(line_plot_svg(no_series)), "");

  LinePlot flat;  // one value: a window around it, no division by zero
  flat.series = {series("train", {5}, {2.5})};
  const std::string flat_doc = line_plot_svg(flat);
  EXPECT_EQ(count(flat_doc, "<circle"), 1);
  EXPECT_FALSE(has_non_finite(flat_doc));
}

TEST(SvgLinePlot, LogScale) {
  LinePlot p = loss_plot();
  p.log_y = true;
  p.series[1].y[0] = 0.0;  // not drawable on a log axis: dropped, no crash
  const std::string doc = line_plot_svg(p);
  EXPECT_EQ(check_balanced(doc), "");
  EXPECT_NE(doc.find("(log scale)"), std::string::npos);
  // 2 .. 8 spans less than a decade: ticks at every digit.
  for (const char* tick : {">2</text>", ">3</text>", ">5</text>", ">8</text>"})
    EXPECT_NE(doc.find(tick), std::string::npos) << tick;
  // Equal ratios are equal distances.
  LinePlot geo;
  geo.log_y = true;
  geo.series = {series("g", {1, 2, 3}, {1000, 10, 0.1})};
  const auto pts = points_of(polylines(line_plot_svg(geo))[0]);
  ASSERT_EQ(pts.size(), 3u);
  EXPECT_NEAR(pts[1].second - pts[0].second, pts[2].second - pts[1].second, 0.11);
  const std::string wide = line_plot_svg(geo);
  for (const char* tick : {">0.1</text>", ">1</text>", ">10</text>", ">100</text>", ">1000</text>"})
    EXPECT_NE(wide.find(tick), std::string::npos) << tick;
}

TEST(SvgLinePlot, EscapesNamesAndRejectsBadInput) {
  LinePlot p = loss_plot();
  p.title = "A & B <run>";
  p.series[0].name = "train \"<1>\"";
  p.series[0].color = "#123456";
  const std::string doc = line_plot_svg(p);
  EXPECT_EQ(check_balanced(doc), "");
  EXPECT_NE(doc.find("A &amp; B &lt;run&gt;"), std::string::npos);
  EXPECT_NE(doc.find("train &quot;&lt;1&gt;&quot;"), std::string::npos);
  EXPECT_NE(doc.find("stroke=\"#123456\""), std::string::npos);

  LinePlot bad = loss_plot();
  bad.series[1].y.pop_back();
  try {
    line_plot_svg(bad);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("series 'val' has 8 x values but 7 y values"),
              std::string::npos)
        << e.what();
  }
  LinePlot tiny = loss_plot();
  tiny.width = 100;
  EXPECT_THROW(line_plot_svg(tiny), Error);
}

TEST(SvgLinePlot, WritesAFileThatPythonParses) {
  TempDir dir;
  LinePlot p = loss_plot();
  p.title = "A & B";
  p.series[0].y[3] = NAN;
  const std::string path = dir.file("loss.svg");
  write_line_plot_svg(path, p);
  std::ifstream in(path);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), line_plot_svg(p));
  if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 not found";
  std::ofstream(dir.file("check.py"))
      << "import sys, xml.etree.ElementTree as ET\n"
         "root = ET.parse(sys.argv[1]).getroot()\n"
         "ns = '{http://www.w3.org/2000/svg}'\n"
         "assert root.tag == ns + 'svg', root.tag\n"
         "groups = [g for g in root.iter(ns + 'g') if g.get('class') == 'series']\n"
         "assert len(groups) == 2, len(groups)\n"
         "texts = [t.text for t in root.iter(ns + 'text')]\n"
         "assert 'A & B' in texts, texts\n";
  const std::string cmd = "/usr/bin/python3 " + dir.file("check.py") + " " + path;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

}  // namespace
}  // namespace sy::report
