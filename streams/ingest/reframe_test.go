package ingest_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// readFramed reads input through ingest.Framed, as Open does for files.
func readFramed(t *testing.T, input string) ([]gotRow, []int64, []ingest.Reject) {
	t.Helper()
	return readFrom(t, ingest.Framed(strings.NewReader(input)), ingest.DefaultConfig())
}

func indent(t testing.TB, s string) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, json.Indent(&b, []byte(s), "", "  "))
	return b.String()
}

// A JSON array of responses, or pretty-printed responses one after another,
// read like the same responses as JSON Lines: strings holding brackets,
// commas and escaped quotes, and Python's NaN, survive the reframing.
func TestFramedInputs(t *testing.T) {
	tricky := strings.Replace(chat, `"prompt":"2+2?"`, `"prompt":"a ] , { \"quoted\" } ["`, 1)
	tricky = strings.Replace(tricky, `"id":"c1"`, `"id":"c2"`, 1)
	nan := strings.Replace(strings.Replace(chat, `"id":"c1"`, `"id":"c3"`, 1), `"logprob":-0.5,"top`, `"logprob":NaN,"top`, 1)
	jsonl := chat + "\n" + tricky + "\n" + nan + "\n"
	want, wantLines, wantRej := readFramed(t, jsonl)
	require.Len(t, want, 3)
	require.Equal(t, []int64{1, 2, 3}, wantLines)
	require.Empty(t, wantRej)
	require.Equal(t, `a ] , { "quoted" } [`, want[1].prompt)

	pretty := func(s string) string { // NaN is not JSON: indent a stand-in and put it back
		return strings.ReplaceAll(indent(t, strings.ReplaceAll(s, "NaN", "123456789")), "123456789", "NaN")
	}
	for name, input := range map[string]string{
		"array":         "[" + chat + "," + tricky + "," + nan + "]",
		"pretty array":  "\ufeff  [\n" + pretty(chat) + ",\n" + pretty(tricky) + ",\n" + pretty(nan) + "\n]\n",
		"pretty values": pretty(chat) + "\n" + pretty(tricky) + "\n\n" + pretty(nan) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			got, lines, rej := readFramed(t, input)
			require.Empty(t, rej)
			require.Equal(t, wantLines, lines, "a report's line is the response's position")
			require.Len(t, got, 3)
			for _, rows := range [][]gotRow{got, want} { // NaN != NaN: compare a stand-in
				for i := range rows {
					rows[i].temperature = 0
					for j, v := range rows[i].chosen {
						if math.IsNaN(v) {
							rows[i].chosen[j] = -12345
						}
					}
				}
			}
			require.Equal(t, want, got)
		})
	}

	got, _, rej := readFramed(t, "[]")
	require.Empty(t, got)
	require.Empty(t, rej)
	got, _, rej = readFramed(t, "["+chat+", 5, "+tricky+"]")
	require.Len(t, got, 2)
	require.Len(t, rej, 1)
	require.EqualValues(t, 2, rej[0].Line)
	require.Equal(t, schemas.ReasonMalformedJSON, rej[0].Reason)
}

// Open reframes gzip files too.
func TestOpenFramedGzip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "responses.json.gz")
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, err := zw.Write([]byte(indent(t, "["+chat+"]")))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	require.NoError(t, os.WriteFile(path, b.Bytes(), 0o644))
	f, err := ingest.Open(path)
	require.NoError(t, err)
	defer f.Close()
	data, err := io.ReadAll(f)
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(string(data), "\n"))
	require.True(t, json.Valid(bytes.TrimSpace(data)))
}

// FuzzFramed: reframing never panics, and a valid JSON array of objects
// becomes exactly one line per element, each the element's JSON.
func FuzzFramed(f *testing.F) {
	f.Add([]byte("[" + chat + "," + chat + "]"))
	f.Add([]byte(indent(f, "["+chat+"]")))
	f.Add([]byte("{\n  \"id\": \"a\",\n  \"s\": \"}{][,\\\"\"\n}\n{\n}"))
	f.Add([]byte(`[{"a":"\\"},{"b":[1,{"c":"]"}]}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := io.ReadAll(ingest.Framed(bytes.NewReader(data)))
		require.NoError(t, err)
		var elems []json.RawMessage
		if json.Unmarshal(data, &elems) != nil || !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("[")) {
			return
		}
		for _, e := range elems {
			if len(e) == 0 || e[0] != '{' {
				return
			}
		}
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.TrimSpace(l) != "" {
				lines = append(lines, l)
			}
		}
		require.Len(t, lines, len(elems), "%q -> %q", data, out)
		for i, e := range elems {
			var a, b bytes.Buffer
			require.NoError(t, json.Compact(&a, e))
			require.NoError(t, json.Compact(&b, []byte(lines[i])), "line %d %q", i, lines[i])
			require.Equal(t, a.String(), b.String())
		}
	})
}
