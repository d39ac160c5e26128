package ingest_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
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

// FuzzFramed: reframing never panics, and any sequence of JSON arrays and
// objects (an array, arrays one after another, objects after an array,
// pretty-printed objects) becomes exactly one line per object or array
// element, each the value's JSON, in order: the values in are the lines out,
// and each line is a row or a reject.
func FuzzFramed(f *testing.F) {
	f.Add([]byte("[" + chat + "," + chat + "]"))
	f.Add([]byte(indent(f, "["+chat+"]")))
	f.Add([]byte("{\n  \"id\": \"a\",\n  \"s\": \"}{][,\\\"\"\n}\n{\n}"))
	f.Add([]byte(`[{"a":"\\"},{"b":[1,{"c":"]"}]}]`))
	f.Add([]byte("[" + chat + "]\n[" + chat + "," + chat + "]\n" + chat + "\n"))
	f.Add([]byte(`[{"a":1}][{"b":2}]{"c":3}` + "\n" + `[1,"x",[2]] {"d":[]}`))
	f.Add([]byte("\ufeff[{}]\n{\n}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := io.ReadAll(ingest.Framed(bytes.NewReader(data)))
		require.NoError(t, err)
		if !framedInput(data) {
			return
		}
		want, ok := objectsIn(data)
		if !ok {
			return
		}
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.TrimSpace(l) != "" {
				lines = append(lines, l)
			}
		}
		require.Len(t, lines, len(want), "%q -> %q", data, out)
		for i, e := range want {
			var a, b bytes.Buffer
			require.NoError(t, json.Compact(&a, e))
			require.NoError(t, json.Compact(&b, []byte(lines[i])), "line %d %q", i, lines[i])
			require.Equal(t, a.String(), b.String())
		}
		// Every line is a row, a reject, or a chunk or event the Reader
		// joins or skips: none is lost between framing and reading.
		rows, _, rej := readFrom(t, bytes.NewReader(out), ingest.DefaultConfig())
		if n := len(rows) + len(rej); n < len(want) {
			joinable := 0
			for _, l := range lines {
				if strings.Contains(l, `"chat.completion.chunk"`) || strings.Contains(l, `"text_completion"`) || strings.Contains(l, `"type"`) {
					joinable++
				}
			}
			require.GreaterOrEqual(t, n+joinable, len(want), "%d values in, %d rows and %d rejects out: %q", len(want), len(rows), len(rej), out)
		}
	})
}

// withID is the chat fixture with another id.
func withID(id string) string { return strings.Replace(chat, `"id":"c1"`, `"id":"`+id+`"`, 1) }

// What follows a JSON array is read, not dropped: more arrays (files that
// were appended to), objects one per line or pretty-printed; text that is no
// response is a malformed line of its own.
func TestFramedReadsPastTheArray(t *testing.T) {
	r1, r2, r3, r4 := withID("r1"), withID("r2"), withID("r3"), withID("r4")
	for _, tc := range []struct {
		name, input string
		ids         []string
		rejected    []int64 // lines
	}{
		{"arrays on lines", "[" + r1 + "," + r2 + "]\n[" + r3 + "," + r4 + "]\n", []string{"r1", "r2", "r3", "r4"}, nil},
		{"arrays back to back", "[" + r1 + "][" + r2 + "]", []string{"r1", "r2"}, nil},
		{"arrays with a comma", "[" + r1 + "],\n[" + r2 + "]", []string{"r1", "r2"}, nil},
		{"a line after an array", "[" + r1 + "]\n" + r2 + "\n" + r3, []string{"r1", "r2", "r3"}, nil},
		{"pretty objects after an array", "[" + r1 + "]\n" + indent(t, r2) + "\n" + indent(t, r3) + "\n", []string{"r1", "r2", "r3"}, nil},
		{"text after an array", "[" + r1 + "]\nnot json\n" + r2 + "\n", []string{"r1", "r2"}, []int64{2}},
		{"a scalar before an object", "[" + r1 + "] 5 " + r2, []string{"r1", "r2"}, []int64{2}},
		{"a stray bracket", "[" + r1 + "]]\n" + r2, []string{"r1", "r2"}, []int64{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, _, rej := readFramed(t, tc.input)
			var ids []string
			for _, r := range rows {
				ids = append(ids, r.id)
			}
			require.Equal(t, tc.ids, ids)
			var lines []int64
			for _, r := range rej {
				require.Equal(t, schemas.ReasonMalformedJSON, r.Reason)
				lines = append(lines, r.Line)
			}
			require.Equal(t, tc.rejected, lines)
		})
	}
}

// A top-level value that is not an object is a response that is missing,
// and the reject says so.
func TestNotAnObjectSaysResponseObject(t *testing.T) {
	for _, input := range []string{"[1,2,3]", "[[1],[2],[3]]", "[1,2]\n" + `"x"` + "\n", `{"id":"a","choices":[]}` + "\n[1]\n5\n[]\n"} {
		_, _, rej := readFramed(t, input)
		require.NotEmpty(t, rej, input)
		for _, r := range rej[len(rej)-3:] {
			require.Equal(t, schemas.ReasonMalformedJSON, r.Reason, input)
			require.NotContains(t, r.Err.Error(), "field :", input)
			require.Contains(t, r.Err.Error(), "want a response object", input)
		}
	}
}

// framedInput tells whether Framed rewrites data (as detectFraming does).
func framedInput(data []byte) bool {
	t := bytes.TrimLeft(bytes.TrimPrefix(data, []byte("\ufeff")), " \t\r\n")
	if len(t) > 0 && t[0] == '[' {
		return true
	}
	first, _, _ := bytes.Cut(t, []byte("\n"))
	return string(bytes.TrimSpace(first)) == "{"
}

// objectsIn lists the values Framed should put on lines of their own: the
// top-level objects and the elements of top-level arrays. ok is false
// unless data is a sequence of JSON objects and arrays.
func objectsIn(data []byte) (values []json.RawMessage, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(bytes.TrimPrefix(data, []byte("\ufeff"))))
	for {
		var v json.RawMessage
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return values, true
		}
		if err != nil || len(v) == 0 {
			return nil, false
		}
		switch v[0] {
		case '{':
			values = append(values, v)
		case '[':
			var elems []json.RawMessage
			if json.Unmarshal(v, &elems) != nil {
				return nil, false
			}
			values = append(values, elems...)
		default:
			return nil, false
		}
	}
}
