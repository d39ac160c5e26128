// Package words writes counts the way a person reads them in messages:
// "1 prompt", "2 prompts".
package words

import "fmt"

// Count says "1 domain", "3 domains": n and the noun, with an s when n is
// not one.
func Count(n int, noun string) string {
	return CountAs(n, noun, noun+"s")
}

// CountAs says "1 message is", "2 messages are": n and the words for one
// or for several, for nouns and phrases an s does not make plural.
func CountAs(n int, one, several string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, several)
}

// NoneOf says that not one of n things could do something: "none of the 3
// responses could be read", "the one response could not be read".
func NoneOf(n int64, noun, verb string) string {
	if n == 1 {
		return fmt.Sprintf("the one %s could not %s", noun, verb)
	}
	return fmt.Sprintf("none of the %d %ss could %s", n, noun, verb)
}
