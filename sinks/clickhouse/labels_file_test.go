package clickhouse

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/internal/testutil"
)

// requirePrintable fails when msg holds a byte that is not printable text:
// an error message must not put binary data on a terminal.
func requirePrintable(t *testing.T, msg string) {
	t.Helper()
	require.True(t, utf8.ValidString(msg), "not UTF-8: %q", msg)
	for _, r := range msg {
		require.True(t, unicode.IsPrint(r), "%q in %q", r, msg)
	}
}

// Audit newuser F2: labels import --in read a gzip-compressed file as a CSV
// whose header was the gzip bytes ("header [\x1f\x8b... lab.csv ...] lacks
// trace_id"). A file is gzip by its first bytes, whatever its name, as for
// score and ingest; CSV and JSON alike, one gzip member or several
// (concatenated files).
func TestReadLabelsFileGzip(t *testing.T) {
	want := []Label{{TraceID: "a", Correct: true, Source: "import", TS: t0}, {TraceID: "b", Correct: false, Source: "review", TS: t0}}
	for _, tc := range []struct{ name, in string }{
		{"csv", "trace_id,correct,source\na,yes,\nb,0,review\n"},
		{"csv_bom_crlf", "\ufefftrace_id,correct,source\r\na,yes,\r\nb,0,review\r\n"},
		{"csv_bom_quoted", "\ufeff\"trace_id\",\"correct\",\"source\"\r\n\"a\",\"yes\",\"\"\r\n\"b\",\"0\",\"review\"\r\n"},
		{"jsonl", `{"trace_id":"a","correct":true}` + "\n" + `{"trace_id":"b","correct":false,"source":"review"}` + "\n"},
		{"array", `[{"trace_id":"a","correct":true},{"trace_id":"b","correct":false,"source":"review"}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain, err := ReadLabelsFile(strings.NewReader(tc.in), "import", t0)
			require.NoError(t, err)
			require.Equal(t, want, plain.Labels)
			rd, err := ReadLabelsFile(bytes.NewReader(testutil.Gzip(t, []byte(tc.in))), "import", t0)
			require.NoError(t, err)
			require.NoError(t, rd.Err())
			require.Equal(t, plain, rd)
		})
	}
	// Two members, as cat a.csv.gz b.gz gives.
	two := append(testutil.Gzip(t, []byte("trace_id,correct\na,1\n")), testutil.Gzip(t, []byte("b,0\n"))...)
	rd, err := ReadLabelsFile(bytes.NewReader(two), "import", t0)
	require.NoError(t, err)
	require.Len(t, rd.Labels, 2)
	require.Equal(t, "b", rd.Labels[1].TraceID)
	// Compressed twice: said so, not "gzip ... only labels import --in reads".
	_, err = ReadLabelsFile(bytes.NewReader(testutil.Gzip(t, testutil.Gzip(t, []byte("trace_id,correct\na,1\n")))), "import", t0)
	require.EqualError(t, err, "line 1: the file is gzip-compressed twice: decompress it once (gunzip) and import that")
}

// A truncated gzip file is an error that says so and names the line it
// stopped at, with the labels read before it (which labels import does not
// store), never one cut short; a corrupt one says it is corrupt. No error
// quotes the compressed bytes.
func TestReadLabelsFileTruncatedGzip(t *testing.T) {
	var csvIn, jsonl, array strings.Builder
	csvIn.WriteString("trace_id,correct\n")
	array.WriteString("[\n")
	const n = 20000
	for i := range n {
		fmt.Fprintf(&csvIn, "trace-%05d,%d\n", i, i%2)
		fmt.Fprintf(&jsonl, `{"trace_id":"trace-%05d","correct":%t}`+"\n", i, i%2 == 0)
		sep := ","
		if i == n-1 {
			sep = "]"
		}
		fmt.Fprintf(&array, `{"trace_id":"trace-%05d","correct":%t}%s`+"\n", i, i%2 == 0, sep)
	}
	for _, tc := range []struct {
		name, in string
		line0    int // the line of the first label
	}{{"csv", csvIn.String(), 2}, {"jsonl", jsonl.String(), 1}, {"array", array.String(), 1}} {
		z := testutil.Gzip(t, []byte(tc.in))
		for _, cut := range []int{2, 5, 12, len(z) / 3, len(z) / 2, len(z) - 9, len(z) - 1} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, cut), func(t *testing.T) {
				rd, err := ReadLabelsFile(bytes.NewReader(z[:cut]), "import", t0)
				require.Error(t, err)
				requirePrintable(t, err.Error())
				require.ErrorContains(t, err, "the gzip data ends abruptly (a truncated file, e.g. an interrupted copy or download)")
				require.NotContains(t, err.Error(), "header")
				require.Zero(t, rd.Refused, "a line cut short is not refused as a label: %v", rd.First)
				for i, l := range rd.Labels {
					require.Equal(t, fmt.Sprintf("trace-%05d", i), l.TraceID, "the labels before the cut, whole")
				}
				if cut > 12 { // past the gzip header
					require.ErrorContains(t, err, fmt.Sprintf("line %d: ", tc.line0+len(rd.Labels)), "the line the file ends in")
				}
			})
		}
		bad := bytes.Clone(z)
		bad[len(bad)-6] ^= 0xff // the CRC-32 of the trailer
		_, err := ReadLabelsFile(bytes.NewReader(bad), "import", t0)
		require.ErrorContains(t, err, "the gzip data is corrupt", tc.name)
		requirePrintable(t, err.Error())
	}
}

// Input that is not text was read as a CSV header and quoted in the error;
// it is named without its bytes now (by its format when known), by
// ReadLabels (a POST body) and ReadLabelsFile alike.
func TestReadLabelsNotText(t *testing.T) {
	for _, tc := range []struct{ name, in, err string }{
		{"gzip_body", string(testutil.Gzip(t, []byte("trace_id,correct\na,1\n"))), "gzip-compressed data, which only labels import --in reads"},
		{"zstd", "\x28\xb5\x2f\xfd\x00\x58\x01\x02", "zstd-compressed data: decompress it first"},
		{"xz", "\xfd7zXZ\x00\x00\x04", "xz-compressed data"},
		{"bzip2", "BZh91AY&SY\x01\x02\x03", "bzip2-compressed data"},
		{"zip", "PK\x03\x04\x14\x00\x00\x00labels.csv", "a zip archive"},
		{"arrow", "ARROW1\x00\x00\xff\xff\xff\xff", "an Arrow IPC file"},
		{"utf16", "\xff\xfet\x00r\x00a\x00", "UTF-16 text; labels are read as UTF-8"},
		{"other", "\x00\x01\x02trace_id,correct\n", "line 1: the input is binary data, not text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadLabels(strings.NewReader(tc.in), "import", t0)
			require.ErrorContains(t, err, tc.err)
			requirePrintable(t, err.Error())
			if tc.name != "gzip_body" {
				_, err = ReadLabelsFile(strings.NewReader(tc.in), "import", t0)
				require.ErrorContains(t, err, tc.err)
				requirePrintable(t, err.Error())
			}
		})
	}
	// A header of text past the first bytes checked is escaped, not quoted raw.
	_, err := ReadLabels(strings.NewReader(strings.Repeat("x", 600)+"\x01,\x1b[31mred\n"), "import", t0)
	require.ErrorContains(t, err, "lacks trace_id")
	requirePrintable(t, err.Error())
}

// Audit newuser F8: an empty label file was "0 labels stored", exit 0,
// where an empty input to score, ingest, train or eval is an error. A file
// without a row is an error now, saying what it holds; a file of rows
// without correct is not (a request batch nobody labelled yet), and
// ReadLabels (a POST body, which answers an empty body itself) is as
// before.
func TestReadLabelsFileEmpty(t *testing.T) {
	for _, tc := range []struct{ name, in, err string }{
		{"empty", "", "the file is empty (or only blank lines): it holds no labels; want CSV with a header trace_id,correct[,source,ts]"},
		{"blank_lines", "\n\r\n\n", "the file is empty (or only blank lines)"},
		{"spaces", "  \n\t\n", "the file is empty (or only blank lines)"},
		{"bom", "\ufeff\n", "the file is empty (or only blank lines)"},
		{"header", "trace_id,correct\n", "no rows after the header: the file holds no labels"},
		{"header_blank_lines", "\ntrace_id,correct,source\n\n\n", "no rows after the header"},
		{"array", "[]\n", "the file holds no labels: its JSON has no label object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, in := range [][]byte{[]byte(tc.in), testutil.Gzip(t, []byte(tc.in))} {
				_, err := ReadLabelsFile(bytes.NewReader(in), "import", t0)
				require.ErrorContains(t, err, tc.err)
			}
			rd, err := ReadLabels(strings.NewReader(tc.in), "import", t0)
			require.NoError(t, err)
			require.Equal(t, LabelsRead{}, rd)
		})
	}
	rd, err := ReadLabelsFile(strings.NewReader("trace_id,correct\na,\nb,\n"), "import", t0)
	require.NoError(t, err)
	require.Equal(t, 2, rd.Unlabelled)
	// Blank lines before the header are skipped, and the header's line named.
	_, err = ReadLabelsFile(strings.NewReader("\n  \ntrace_id,x\n"), "import", t0)
	require.ErrorContains(t, err, "line 3: header [trace_id x] lacks correct")
}

// Audit newuser F9: a file of responses (id and choices, and a correct
// field) was refused with "line 1: empty trace_id; line 2: empty trace_id;
// ..." It is said once now, with what a label is; rows that are wrong in
// another way are still listed one by one, and a label with an empty
// trace_id is still "empty trace_id". A responses file without correct is
// not "unlabelled rows" either.
func TestReadLabelsResponses(t *testing.T) {
	var responses strings.Builder
	for i := range 24 {
		fmt.Fprintf(&responses, `{"id":"chatcmpl-%d","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"content":"4"}}],"correct":%t}`+"\n", i, i%2 == 0)
	}
	const once = "line 1 and 23 more lines like it: no trace_id, but id and choices: these look like responses, not labels; labels need trace_id,correct"
	for _, in := range []string{responses.String(), strings.ReplaceAll(responses.String(), `,"correct":true`, "")} {
		rd, err := ReadLabels(strings.NewReader(in), "import", t0)
		require.NoError(t, err)
		require.Empty(t, rd.Labels)
		require.Zero(t, rd.Unlabelled)
		require.Equal(t, 24, rd.Refused)
		require.Equal(t, 24, rd.Responses)
		require.Equal(t, map[string]int{RefusedTraceID: 24}, rd.Reasons, "counted under trace_id")
		require.Len(t, rd.First, 1)
		require.True(t, strings.HasPrefix(rd.First[0], once), rd.First[0])
		require.Equal(t, rd.First[0], rd.Err().Error(), "no (and 23 more ...): the entry counts them")
		require.NotContains(t, rd.Err().Error(), "empty trace_id")
	}

	rd, err := ReadLabels(strings.NewReader(`{"id":"r1","correct":true}`), "import", t0)
	require.NoError(t, err)
	require.Equal(t, `line 1: no trace_id, but id: this looks like a response, not a label; `+labelsNeed, rd.Err().Error())

	// Mixed with labels and bad rows: the responses once, the others each.
	in := `{"trace_id":"ok","correct":true}` + "\n" + responses.String() + `{"trace_id":"","correct":true}` + "\n" +
		`{"trace_id":"x","correct":"maybe"}` + "\n" + `{"trace_id":null,"choices":[],"correct":1}` + "\n"
	rd, err = ReadLabels(strings.NewReader(in), "import", t0)
	require.NoError(t, err)
	require.Len(t, rd.Labels, 1)
	require.Equal(t, 27, rd.Refused)
	require.Equal(t, 25, rd.Responses)
	require.Len(t, rd.First, 3)
	require.True(t, strings.HasPrefix(rd.First[0], "line 2 and 24 more lines like it: no trace_id, but id and choices: these look like responses"), rd.First[0])
	require.Equal(t, "line 26: empty trace_id", rd.First[1])
	require.Contains(t, rd.First[2], `line 27: trace x: correct is "maybe"`)
	require.NotContains(t, rd.Err().Error(), "more;", "all 27 are listed")

	// Past the five listed, the rest are counted, the responses not twice.
	var many strings.Builder
	many.WriteString(responses.String())
	for i := range 8 {
		fmt.Fprintf(&many, `{"trace_id":"t%d","correct":"maybe"}`+"\n", i)
	}
	rd, err = ReadLabels(strings.NewReader(many.String()), "import", t0)
	require.NoError(t, err)
	require.Len(t, rd.First, 5, "the responses' entry and four others")
	require.Contains(t, rd.Err().Error(), "(and 4 more; 32 invalid labels in all: correct 8, trace_id 24)")

	// A topic message of responses: one entry too.
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rd, err = DecodeLabels([]byte(responses.String()), "kafka", mem)
	require.NoError(t, err)
	require.Equal(t, 24, rd.Refused)
	require.Len(t, rd.First, 1)
	require.True(t, strings.HasPrefix(rd.First[0], once), rd.First[0])

	// A table of responses (score's or labels export's) as CSV.
	_, err = ReadLabels(strings.NewReader("id,model,domain,correct\nr1,m,d,1\n"), "import", t0)
	require.ErrorContains(t, err, "line 1: header [id model domain correct] has id but no trace_id: this looks like a table of responses (as entrowatch score and labels export write), not labels; labels need trace_id,correct")
}

// ReadLabelsFile reads a file as ReadLabels reads it (ts of the file kept,
// none left zero for ImportLabels with a zero now).
func TestReadLabelsFileSameAsReadLabels(t *testing.T) {
	in := "trace_id,correct,ts\na,1,2026-03-01T00:00:00Z\nb,0,\nc,\n"
	want, err := ReadLabels(strings.NewReader(in), "import", time.Time{})
	require.NoError(t, err)
	got, err := ReadLabelsFile(strings.NewReader(in), "import", time.Time{})
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.True(t, got.Labels[1].TS.IsZero())
}
