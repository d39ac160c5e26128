package ingest_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// pretty is chat (one line) as json.dumps(indent=2) lays it out.
func pretty(id string) string {
	return strings.Join([]string{
		"{",
		`  "id": "` + id + `",`,
		`  "model": "gpt-x",`,
		`  "choices": [`,
		`    {`,
		`      "index": 0,`,
		`      "finish_reason": "stop",`,
		`      "logprobs": {"content": [{"token": "}{", "logprob": -0.01, "top_logprobs": [{"token": "\"{", "logprob": -0.01}, {"token": "5", "logprob": -4.6}]}]}`,
		`    }`,
		`  ]`,
		"}",
	}, "\n")
}

// TestPrettyObjectsInJSONLines: pretty-printed objects appended to a JSON
// Lines file are read as responses (numbered by their first line), not as
// one malformed_json reject per physical line; braces inside strings do not
// count. An object the input ends in is one reject.
func TestPrettyObjectsInJSONLines(t *testing.T) {
	// chatLine ends in "\n": "\r\n" after it is a blank line 14
	input := chatLine("a") + pretty("b") + "\n" + chatLine("c") + "\r\n" + pretty("d") + "\n{\n  \"id\": \"cut\",\n"
	rows, rejects := readAll(t, input, false)
	var ids []string
	for _, r := range rows {
		ids = append(ids, r.id)
	}
	require.Equal(t, []string{"a", "b", "c", "d"}, ids)
	require.Equal(t, []float64{-0.01}, rows[1].chosen)
	require.Equal(t, [][]float64{{-0.01, -4.6}}, rows[1].top)
	require.Len(t, rejects, 1)
	require.Equal(t, ingest.Reject{Line: 26, ID: "cut", Reason: schemas.ReasonMalformedJSON, Err: rejects[0].Err}, rejects[0])
}

// TestPrettyObjectBounded: an unclosed "{" does not swallow the input: past
// max_line_bytes the object is too_long and the lines after it are read as
// lines again.
func TestPrettyObjectBounded(t *testing.T) {
	cfg := ingest.DefaultConfig()
	cfg.MaxLineBytes = 1024
	var b strings.Builder
	b.WriteString("{\n")
	for range 100 {
		b.WriteString(`  "pad": "` + strings.Repeat("x", 20) + `",` + "\n")
	}
	b.WriteString(chatLine("after"))
	rows, _, rejects := readWith(t, b.String(), cfg)
	require.Len(t, rows, 1)
	require.Equal(t, "after", rows[0].id)
	require.Equal(t, schemas.ReasonTooLong, rejects[0].Reason)
	require.Equal(t, int64(1), rejects[0].Line)
	require.Contains(t, rejects[0].Err.Error(), "a pretty-printed object (from line 1) longer than 1024 bytes")
}

// TestPrettyObjectInterrupted: a "{" whose object never closes does not
// swallow the responses after it. A stray "{" line, or a pretty-printed
// object cut short (a writer that died mid-json.dumps), is one
// malformed_json reject at its first line, and the JSON Lines records after
// it are read. Before, every line after it joined the object until 64 MiB:
// 1,749 of tinylm-dev's 4,800 responses lost behind one stray "{", and a
// live pipe sent nothing.
func TestPrettyObjectInterrupted(t *testing.T) {
	cut := strings.Join(strings.Split(pretty("cut"), "\n")[:6], "\n") // inside "choices": [ {
	for name, tc := range map[string]struct {
		input  string
		ids    []string
		reject int64
	}{
		"stray brace":            {chatLine("a") + "{\n" + chatLine("b") + chatLine("c"), []string{"a", "b", "c"}, 2},
		"object cut short":       {chatLine("a") + cut + "\n" + chatLine("b") + chatLine("c"), []string{"a", "b", "c"}, 2},
		"brace where a key goes": {chatLine("a") + "{\n  \"id\": \"x\",\n" + pretty("p") + "\n" + chatLine("c"), []string{"a", "p", "c"}, 2},
	} {
		t.Run(name, func(t *testing.T) {
			rows, rejects := readAll(t, tc.input, false)
			var ids []string
			for _, r := range rows {
				ids = append(ids, r.id)
			}
			require.Equal(t, tc.ids, ids)
			require.Len(t, rejects, 1, "%+v", rejects)
			require.Equal(t, tc.reject, rejects[0].Line)
			require.Equal(t, schemas.ReasonMalformedJSON, rejects[0].Reason)
			require.Contains(t, rejects[0].Err.Error(), `opens an object (a lone "{") that does not close before line`)
		})
	}
	// A pretty object holding an empty object on a line of its own is whole.
	rows, rejects := readAll(t, "{\n  \"id\": \"e\",\n  \"model\": \"m\",\n  \"attributes\":\n  {},\n  \"choices\": [{\"index\": 0, \"finish_reason\": \"stop\", \"logprobs\": {\"content\": [{\"logprob\": -0.1, \"top_logprobs\": [{\"logprob\": -0.1}]}]}}]\n}\n", false)
	require.Empty(t, rejects)
	require.Len(t, rows, 1)
}
