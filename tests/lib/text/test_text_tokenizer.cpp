// lib/text: BPE, added tokens, pre-tokenizer, decoding (llm spec §5, §7.4) and parity of
// the ids with the reference tokenizer on ../shared/fixtures/tiny-a/llm/info.json.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>

#include "io/error.h"
#include "test_support.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

using glmvoice::text::Tokenizer;

namespace {

const Tokenizer& tiny() {
  static Tokenizer tok = Tokenizer::load(glmvoice::test::tiny_model_dir("llm"));
  return tok;
}

int64_t rank_of(const Tokenizer& tok, const std::string& bytes) {
  const auto ids = tok.bpe(bytes);
  EXPECT_EQ(ids.size(), 1u) << "'" << bytes << "' is not one token";
  return ids.empty() ? -1 : ids[0];
}

std::string hex_to_bytes(const std::string& hex) {
  std::string out;
  for (size_t i = 2; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

}  // namespace

TEST(TextTokenizer, tiny_special_ids_come_from_the_files) {
  const auto& tok = tiny();
  EXPECT_EQ(tok.n_ranks(), 300);
  EXPECT_EQ(tok.specials().gmask, tok.find_added("[gMASK]"));
  EXPECT_EQ(tok.audio_offset(), tok.find_added("<|audio_0|>"));
  EXPECT_GT(tok.n_audio(), 0);
  EXPECT_EQ(tok.find_added("<|audio_" + std::to_string(tok.n_audio() - 1) + "|>"), tok.audio_offset() + tok.n_audio() - 1);
  EXPECT_EQ(tok.max_id(), tok.audio_offset() + tok.n_audio() - 1);
}

TEST(TextTokenizer, bpe_vectors) {
  const auto& tok = tiny();
  const int64_t hello = rank_of(tok, "hello"), o = rank_of(tok, "o");
  EXPECT_EQ(tok.encode("hello", false), (std::vector<int64_t>{hello}));
  EXPECT_EQ(tok.encode("hellooo", false), (std::vector<int64_t>{hello, o, o}));
  const int64_t de = rank_of(tok, "\xE7\x9A\x84");
  EXPECT_EQ(tok.encode("\xE7\x9A\x84\xE7\x9A\x84", false), (std::vector<int64_t>{de, de}));
  // Leftmost tie-break: both E7 9A pairs have the same rank.
  EXPECT_EQ(tok.bpe("\xE7\x9A\xE7\x9A"), (std::vector<int64_t>{rank_of(tok, "\xE7\x9A"), rank_of(tok, "\xE7\x9A")}));
  // Single bytes are not in identity order.
  EXPECT_NE(rank_of(tok, "a"), static_cast<int64_t>('a'));
}

TEST(TextTokenizer, pretokenizer_vectors) {
  const auto& tok = tiny();
  EXPECT_EQ(tok.pretokenize("a   b"), (std::vector<std::string>{"a", "  ", " b"}));
  EXPECT_EQ(tok.pretokenize("12345"), (std::vector<std::string>{"123", "45"}));
  EXPECT_EQ(tok.pretokenize("don't"), (std::vector<std::string>{"don", "'t"}));
  EXPECT_EQ(tok.pretokenize("DON'T"), (std::vector<std::string>{"DON", "'T"}));
  EXPECT_EQ(tok.pretokenize("\n\nx"), (std::vector<std::string>{"\n\n", "x"}));
  EXPECT_EQ(tok.pretokenize(" 1"), (std::vector<std::string>{" ", "1"}));
  EXPECT_EQ(tok.pretokenize("hi  "), (std::vector<std::string>{"hi", "  "}));
  EXPECT_EQ(tok.pretokenize("x -- y!!\n"), (std::vector<std::string>{"x", " --", " y", "!!\n"}));
  // CJK ideographs are letters; U+3000 is whitespace.
  EXPECT_EQ(tok.pretokenize("\xE4\xBD\xA0\xE5\xA5\xBD\xE3\x80\x80x"),
            (std::vector<std::string>{"\xE4\xBD\xA0\xE5\xA5\xBD", "\xE3\x80\x80x"}));
}

TEST(TextTokenizer, added_token_split_and_prefix) {
  const auto& tok = tiny();
  const int64_t user = tok.find_added("<|user|>");
  auto ids = tok.encode("<|user|>\nhi<|audio_12|><|audio_1|>", false);
  std::vector<int64_t> expected = {user};
  for (int64_t id : tok.encode_ordinary("\nhi")) expected.push_back(id);
  expected.push_back(tok.audio_offset() + 12);
  expected.push_back(tok.audio_offset() + 1);
  EXPECT_EQ(ids, expected);
  ids = tok.encode("anything");
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], tok.find_added("[gMASK]"));
  EXPECT_EQ(ids[1], tok.find_added("<sop>"));
  // Sanitised user text cannot inject a control token.
  const auto safe = tok.encode(tok.sanitize("a<|user|>b"), false);
  EXPECT_EQ(std::count(safe.begin(), safe.end(), user), 0);
  EXPECT_EQ(tok.sanitize("plain < text |>"), "plain < text |>");
}

TEST(TextTokenizer, decode_and_streaming_utf8) {
  const auto& tok = tiny();
  const int64_t e79a = rank_of(tok, "\xE7\x9A"), b84 = rank_of(tok, "\x84");
  EXPECT_EQ(tok.decode({e79a, b84}), "\xE7\x9A\x84");
  EXPECT_EQ(tok.decode({e79a}), "\xEF\xBF\xBD");
  EXPECT_EQ(tok.decode({tok.find_added("<|user|>")}), "<|user|>");
  EXPECT_EQ(tok.decode({tok.max_id() + 1}), "");  // padded row: nothing
  glmvoice::text::Utf8Assembler a;
  EXPECT_EQ(a.push(tok.token_bytes(e79a)), "");
  // an audio token in between does not flush anything
  EXPECT_EQ(a.push(tok.token_bytes(b84)), "\xE7\x9A\x84");
  EXPECT_EQ(a.push("\xE7"), "");
  EXPECT_EQ(a.finish(), "\xEF\xBF\xBD");
  EXPECT_EQ(a.push("a\x80" "b"), "a\xEF\xBF\xBD" "b");  // never-valid byte replaced at once
  EXPECT_EQ(glmvoice::text::utf8_replace_invalid("\xF0\x9F\x98"), "\xEF\xBF\xBD");
  EXPECT_EQ(glmvoice::text::utf8_replace_invalid("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(TextTokenizer, missing_files_name_the_file) {
  try {
    Tokenizer::load(glmvoice::test::scratch_dir("no-tokenizer"));
    FAIL() << "expected an error";
  } catch (const glmvoice::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.model"), std::string::npos) << e.what();
  }
}

TEST(TextTokenizerParity, fixture_text_samples) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string fx = glmvoice::test::fixtures_dir();
  const auto tok = Tokenizer::load(fx + "/models/tiny-a/llm");
  std::ifstream in(fx + "/tiny-a/llm/info.json");
  const auto info = nlohmann::json::parse(in);
  for (const auto& [name, id] : info.at("ids").items()) EXPECT_EQ(tok.find_added(name), id.get<int64_t>()) << name;
  int n = 0;
  for (const auto& sample : info.at("text_samples")) {
    const std::string text = sample.at("text").get<std::string>();
    EXPECT_EQ(tok.encode(text, true), sample.at("encode").get<std::vector<int64_t>>()) << text;
    EXPECT_EQ(tok.encode(text, false), sample.at("encode_no_special").get<std::vector<int64_t>>()) << text;
    EXPECT_EQ(tok.encode(text, true), sample.at("call_input_ids").get<std::vector<int64_t>>()) << text;
    // byte pieces
    const auto ids = tok.encode(text, false);
    const auto& pieces = sample.at("tokens");
    ASSERT_EQ(ids.size(), pieces.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      const std::string p = pieces[i].get<std::string>();
      const std::string bytes = p.rfind("0x", 0) == 0 ? hex_to_bytes(p) : p;
      EXPECT_EQ(tok.token_bytes(ids[i]), bytes) << text << " piece " << i;
    }
    EXPECT_EQ(tok.decode(ids), text);
    ++n;
  }
  EXPECT_GE(n, 5);
}
