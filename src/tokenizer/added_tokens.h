// Added (special) tokens: matched in the raw text before normalization (special or
// normalized=false) or in the normalized text (normalized=true), leftmost-longest, with
// lstrip / rstrip / single_word, as HF's AddedVocabulary does.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sy {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = true;
};

// A section of the input: either an added token (id set) or text to tokenize normally.
struct Section {
  std::string text;
  std::optional<int32_t> id;
  size_t offset = 0;  // byte offset in the string that was split
};

class AddedTokenMatcher {
 public:
  void add(const AddedToken& token, std::string pattern);
  bool empty() const { return tokens_.empty(); }
  std::vector<Section> split(std::string_view text) const;

 private:
  struct Node {
    std::map<unsigned char, int32_t> children;
    int32_t token = -1;  // index into tokens_ when a token ends here
  };
  std::vector<Node> nodes_{Node{}};
  std::vector<AddedToken> tokens_;
};

}  // namespace sy
