// The next n words of libtorch's CPU generator engine (at::mt19937) in one call: the same
// words, and the same engine state after, as n calls of engine(). The state is twisted and the
// words are tempered 8 at a time with AVX2 (one call of the scalar engine costs ~2 ns, and the
// CPU sampler's draw takes two words per vocabulary row: 337920 a token at the real vocabulary).
// Without AVX2 it calls the engine n times.
#pragma once

#include <ATen/core/MT19937RNGEngine.h>

#include <cstdint>

namespace glmvoice::llm {

void mt19937_fill(at::mt19937& engine, uint32_t* out, int64_t n);

}  // namespace glmvoice::llm
