package estimate

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// TestLabelSpellingsAgree: a labelled CSV's correct column and the
// "correct" string field of a JSON Lines response accept the same
// spellings with the same meaning (before, "yes" and "t" were labels in a
// CSV but rejected the whole response as malformed_json).
func TestLabelSpellingsAgree(t *testing.T) {
	for _, s := range []string{"1", "0", "1.0", "0.0", "true", "false", "True", "FALSE", "t", "f", "T", "yes", "no", "Yes", " no ", "",
		"maybe", "2", "y", "n", "-1"} {
		y, labelled, csvErr := parseLabel(s)
		line := fmt.Sprintf(`{"id":"a","model":"m","correct":%q,"choices":[{"logprobs":{"content":[{"logprob":-0.1,"top_logprobs":[{"logprob":-0.1}]}]}}]}`, s)
		correct, null, jsonErr := readJSONLabel(t, line)
		if csvErr != nil {
			require.ErrorContains(t, jsonErr, "is not a label", "%q: the CSV refuses it, the JSON reader must too", s)
			continue
		}
		require.NoError(t, jsonErr, "%q is a CSV label", s)
		require.Equal(t, !labelled, null, "%q: unlabelled in both", s)
		if labelled {
			require.Equal(t, y == 1, correct, "%q", s)
		}
	}
	// JSON's own booleans and numbers.
	for raw, want := range map[string]bool{"true": true, "false": false, "1": true, "0": false} {
		correct, null, err := readJSONLabel(t, `{"id":"a","model":"m","correct":`+raw+`,"choices":[{}]}`)
		require.NoError(t, err, raw)
		require.False(t, null, raw)
		require.Equal(t, want, correct, raw)
	}
}

// readJSONLabel reads one response line with the ingest reader and returns
// its label, or the reject's error.
func readJSONLabel(t *testing.T, line string) (correct, null bool, err error) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	r := ingest.NewReader(strings.NewReader(line+"\n"), ingest.DefaultConfig(), mem)
	defer r.Release()
	rec, err := r.Next()
	if rj := r.Rejects(); len(rj) > 0 {
		if rec != nil {
			rec.Release()
		}
		return false, false, rj[0].Err
	}
	if errors.Is(err, io.EOF) {
		return false, false, errors.New("no row")
	}
	require.NoError(t, err)
	defer rec.Release()
	c := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColCorrect)).(*array.Boolean)
	require.Equal(t, 1, c.Len())
	return c.Value(0), c.IsNull(0), nil
}
