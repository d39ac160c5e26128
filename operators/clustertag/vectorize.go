package clustertag

import (
	"math"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// VectorConfig says how a prompt becomes a term vector. It is part of the
// artifact: the tagger must vectorise exactly as the fit did.
type VectorConfig struct {
	// HashBits is log2 of the number of hash buckets words and bigrams fall
	// into, from 8 to 24. Default 18 (262,144 buckets; collisions are rare
	// below ~50k terms).
	HashBits int `json:"hash_bits"`
	// Bigrams adds adjacent word pairs (after stop-word removal). Default
	// false: on prompts-dev they did not raise the adjusted Rand index (see
	// docs/clusters.md) and they double the terms to tag.
	Bigrams bool `json:"bigrams"`
	// StopWords drops common English function words. Default true.
	StopWords bool `json:"stop_words"`
	// Stem strips a few English suffixes (plural s, -ing, -ed, -ation...). Default true.
	Stem bool `json:"stem"`
	// Sublinear uses 1+ln(tf) instead of tf. Default true.
	Sublinear bool `json:"sublinear_tf"`
	// MinLen drops words shorter than this many characters (runes, so "у"
	// is one). Default 2. CJK text is split into character bigrams instead
	// (see appendBuckets), to which it does not apply.
	MinLen int `json:"min_len"`
	// Shapes adds a token for every number (all numbers share it) and for
	// every math symbol (= + * / ^ \\ $ % < >), signals of quantitative
	// questions that words alone miss.
	Shapes bool `json:"shapes,omitempty"`
}

// DefaultVectorConfig returns the vectoriser settings documented on the fields.
func DefaultVectorConfig() VectorConfig {
	return VectorConfig{HashBits: 18, Bigrams: false, StopWords: true, Stem: true, Sublinear: true, MinLen: 2}
}

// hasher turns text into hashed term buckets without allocating per token:
// words are found, lower-cased and hashed in place over the string's bytes.
type hasher struct {
	cfg  VectorConfig
	mask uint64
	stop *stopSet
}

func newHasher(cfg VectorConfig) *hasher {
	h := &hasher{cfg: cfg, mask: 1<<uint(cfg.HashBits) - 1}
	if cfg.StopWords {
		h.stop = newStopSet(stopWords)
	}
	return h
}

// stopSet is an open-addressing set of word hashes, cheaper than a map in
// the hot loop (one probe for most words).
type stopSet struct {
	slots []uint64
	mask  uint64
}

func newStopSet(words []string) *stopSet {
	n := 1
	for n < 8*len(words) {
		n <<= 1
	}
	s := &stopSet{slots: make([]uint64, n), mask: uint64(n - 1)}
	for _, w := range words {
		h := hashWord(w, 0, len(w)) | 1 // 0 marks an empty slot
		i := mix(h) & s.mask
		for s.slots[i] != 0 && s.slots[i] != h {
			i = (i + 1) & s.mask
		}
		s.slots[i] = h
	}
	return s
}

func (s *stopSet) has(h uint64) bool {
	h |= 1
	for i := mix(h) & s.mask; ; i = (i + 1) & s.mask {
		switch s.slots[i] {
		case h:
			return true
		case 0:
			return false
		}
	}
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
	// bigramSalt separates the bigram hash space from the word hash space.
	bigramSalt = 0x9e3779b97f4a7c15
)

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// isASCIIWord reports whether the ASCII byte c belongs to a word.
func isASCIIWord(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// isWordRune reports whether the non-ASCII rune r belongs to a word: a
// letter, digit or combining mark outside the CJK scripts. Other symbols
// ("–", "÷", "€", emoji) separate words.
func isWordRune(r rune) bool {
	return (unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)) && !isCJK(r)
}

// isCJK reports whether r is Han, Hiragana, Katakana or Hangul: scripts
// written without spaces between words, tokenised as character bigrams.
// The Katakana-Hiragana prolonged sound mark (ー, script Common) counts too.
func isCJK(r rune) bool {
	return r >= 0x1100 && (unicode.Is(unicode.Han, r) || unicode.Is(unicode.Hiragana, r) ||
		unicode.Is(unicode.Katakana, r) || unicode.Is(unicode.Hangul, r) || r == 0x30FC)
}

// Token kinds returned by nextToken.
const (
	tokEnd    = iota
	tokWord   // a run of word characters; n counts its runes
	tokCJK    // two adjacent CJK characters, or one standing alone
	tokSymbol // an ASCII math symbol (Shapes only)
)

// nextToken finds the next token of text at or after i: its kind, its bytes
// [start, end), its length in runes n (words) and where to continue. Words
// are runs of letters, digits and marks; a run of CJK characters yields one
// token per adjacent pair (the standard bigram tokenisation of unspaced
// text, as Lucene's CJK analyser does), a lone CJK character itself.
func nextToken(text string, i int, shapes bool) (kind, start, end, n, next int) {
	l := len(text)
	for i < l {
		c := text[i]
		if c < utf8.RuneSelf {
			if isASCIIWord(c) {
				return scanWord(text, i)
			}
			if shapes && isSymbol(c) {
				return tokSymbol, i, i + 1, 1, i + 1
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(text[i:])
		if isCJK(r) {
			if i+size < l {
				if r2, size2 := utf8.DecodeRuneInString(text[i+size:]); isCJK(r2) {
					return tokCJK, i, i + size + size2, 2, i + size
				}
			}
			if p, _ := utf8.DecodeLastRuneInString(text[:i]); i == 0 || !isCJK(p) {
				return tokCJK, i, i + size, 1, i + size
			}
			i += size // the last of a run, already in its bigram
			continue
		}
		if isWordRune(r) {
			return scanWord(text, i)
		}
		i += size
	}
	return tokEnd, l, l, 0, l
}

// scanWord reads the word that starts at i.
func scanWord(text string, i int) (kind, start, end, n, next int) {
	j := i
	for j < len(text) && isASCIIWord(text[j]) {
		j++
	}
	n = j - i
	for j < len(text) {
		c := text[j]
		if c < utf8.RuneSelf {
			if !isASCIIWord(c) {
				break
			}
			j++
			n++
			continue
		}
		r, size := utf8.DecodeRuneInString(text[j:])
		if !isWordRune(r) {
			break
		}
		j += size
		n++
	}
	return tokWord, i, j, n, j
}

// hashWord is FNV-1a over the lower-cased UTF-8 of s[i:j].
func hashWord(s string, i, j int) uint64 {
	h := uint64(fnvOffset)
	for ; i < j && s[i] < utf8.RuneSelf; i++ {
		h ^= uint64(lower(s[i]))
		h *= fnvPrime
	}
	for i < j {
		c := s[i]
		if c < utf8.RuneSelf {
			h ^= uint64(lower(c))
			h *= fnvPrime
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:j])
		var b [utf8.UTFMax]byte
		for _, x := range b[:utf8.EncodeRune(b[:], unicode.ToLower(r))] {
			h ^= uint64(x)
			h *= fnvPrime
		}
		i += size
	}
	return h
}

// stemEnd returns the end of the stem of the lower-cased word s[i:j]: a few
// inflectional suffixes are stripped when a stem of at least 4 bytes remains.
func stemEnd(s string, i, j int) int {
	n := j - i
	for _, suf := range suffixes {
		m := len(suf)
		if n < m+4 {
			continue
		}
		ok := true
		for k := 0; k < m; k++ {
			if lower(s[j-m+k]) != suf[k] {
				ok = false
				break
			}
		}
		if ok {
			// "-ss" (class, process) is not a plural.
			if suf == "s" && lower(s[j-2]) == 's' {
				return j
			}
			return j - m
		}
	}
	return j
}

var suffixes = []string{"ational", "ations", "ation", "ically", "ments", "ment", "ings", "ing", "ies", "es", "ed", "ly", "s"}

const (
	shapeSalt   = 0x5f3759df5f3759df
	numberToken = 0x6e756d6265720000 // "number"
)

func isSymbol(c byte) bool {
	switch c {
	case '=', '+', '*', '/', '^', '\\', '$', '%', '<', '>':
		return true
	}
	return false
}

func isNumber(s string, i, j int) bool {
	for ; i < j; i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// mix spreads a 64-bit hash (splitmix64 finaliser).
func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// appendBuckets appends the hash bucket of every word and bigram of text to
// dst and returns it. It allocates only when dst must grow.
func (h *hasher) appendBuckets(dst []uint32, text string) []uint32 {
	var prev uint64
	havePrev := false
	for i := 0; ; {
		kind, start, end, n, next := nextToken(text, i, h.cfg.Shapes)
		i = next
		switch kind {
		case tokEnd:
			return dst
		case tokSymbol:
			dst = append(dst, uint32(mix(uint64(text[start])^shapeSalt)&h.mask))
			continue
		case tokWord:
			if h.cfg.Shapes && isNumber(text, start, end) {
				dst = append(dst, uint32(mix(numberToken)&h.mask))
				continue
			}
			if n < h.cfg.MinLen {
				continue
			}
			if h.stop != nil && h.stop.has(hashWord(text, start, end)) {
				continue
			}
			if h.cfg.Stem {
				end = stemEnd(text, start, end)
			}
		}
		w := mix(hashWord(text, start, end))
		dst = append(dst, uint32(w&h.mask))
		if h.cfg.Bigrams {
			if havePrev {
				dst = append(dst, uint32(mix(prev*fnvPrime^w^bigramSalt)&h.mask))
			}
			prev, havePrev = w, true
		}
	}
}

// termCounts sorts buckets in place and collapses runs into (bucket, count).
func termCounts(buckets []uint32, terms []uint32, counts []float32) ([]uint32, []float32) {
	slices.Sort(buckets)
	terms, counts = terms[:0], counts[:0]
	for i := 0; i < len(buckets); {
		j := i + 1
		for j < len(buckets) && buckets[j] == buckets[i] {
			j++
		}
		terms = append(terms, buckets[i])
		counts = append(counts, float32(j-i))
		i = j
	}
	return terms, counts
}

func tfWeight(c float32, sublinear bool) float32 {
	if c == 1 {
		return 1
	}
	if sublinear {
		return 1 + float32(math.Log(float64(c)))
	}
	return c
}

// stopWords is a compact English stop list (function words and the words
// that open exam questions: "which", "following", ...).
var stopWords = []string{
	"a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "as", "at",
	"be", "because", "been", "before", "being", "below", "between", "both", "but", "by",
	"can", "could", "did", "do", "does", "doing", "down", "during", "each", "either", "few", "for", "from", "further",
	"had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how",
	"i", "if", "in", "into", "is", "it", "its", "itself", "just", "may", "me", "might", "more", "most", "must", "my", "myself",
	"no", "nor", "not", "now", "of", "off", "on", "once", "one", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own",
	"same", "shall", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves",
	"then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "us", "very",
	"was", "we", "were", "what", "when", "where", "whether", "which", "while", "who", "whom", "whose", "why", "will", "with", "would",
	"you", "your", "yours", "yourself", "yourselves",
	"following", "true", "false", "statement", "statements", "best", "describes", "likely", "least", "correct", "answer", "question",
}

// surfaces calls fn with the bucket and a readable form (lower-cased words,
// "w1 w2" for bigrams) of every term appendBuckets would emit. Fit uses it to
// name clusters; it allocates and is not for the hot path.
func (h *hasher) surfaces(text string, fn func(bucket uint32, surface string)) {
	var prev uint64
	prevWord := ""
	for i := 0; ; {
		kind, start, end, n, next := nextToken(text, i, h.cfg.Shapes)
		i = next
		switch kind {
		case tokEnd:
			return
		case tokSymbol:
			fn(uint32(mix(uint64(text[start])^shapeSalt)&h.mask), text[start:end])
			continue
		case tokWord:
			if h.cfg.Shapes && isNumber(text, start, end) {
				fn(uint32(mix(numberToken)&h.mask), "<number>")
				continue
			}
			if n < h.cfg.MinLen {
				continue
			}
			if h.stop != nil && h.stop.has(hashWord(text, start, end)) {
				continue
			}
		}
		word := strings.ToLower(text[start:end])
		if kind == tokWord && h.cfg.Stem {
			end = stemEnd(text, start, end)
		}
		w := mix(hashWord(text, start, end))
		fn(uint32(w&h.mask), word)
		if h.cfg.Bigrams {
			if prevWord != "" {
				fn(uint32(mix(prev*fnvPrime^w^bigramSalt)&h.mask), prevWord+" "+word)
			}
			prev, prevWord = w, word
		}
	}
}
