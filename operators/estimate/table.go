package estimate

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/internal/csvin"
	"github.com/entrowatch/entrowatch/internal/words"
	"github.com/entrowatch/entrowatch/schemas"
)

// Table is a labelled feature table held in memory: one row per response.
type Table struct {
	Features []string  // feature names, the column order of X
	X        []float64 // row-major, len = N*len(Features)
	Y        []float64 // 1 correct, 0 incorrect
	Model    []string  // LLM model per row
	Domain   []string  // domain per row
	// Skipped counts rows left out while reading, by reason (missing label,
	// non-finite feature, status not ok).
	Skipped map[string]int
	// Unterminated is an Arrow stream that ended without its end-of-stream
	// marker: allowed by the format, but also what a file cut short between
	// two batches looks like, so rows may be missing (a cut inside a batch
	// is an error).
	Unterminated bool
	// EmptyDomain counts the rows read without a domain: they are in the
	// domain NoDomain. (Rows without a model are skipped, counted in
	// Skipped as "no model".) Trimmed counts the rows whose model or
	// domain had blanks around it, taken off ("tinylm-large " is
	// "tinylm-large"). Notes says both for a person.
	EmptyDomain, Trimmed int
	// ID is each row's response id (column id or trace_id), when every
	// table read has one; nil otherwise. Notes uses it to say that rows
	// repeat: the same response in two tables counts twice.
	ID []string
}

// Notes says what a person should know about how the rows were read, one
// sentence each: rows without a domain or model, names trimmed, features
// that are constant within a model.
func (t *Table) Notes() []string {
	var notes []string
	if t.EmptyDomain > 0 {
		n := fmt.Sprintf("%s no domain: put in one domain named %s", words.CountAs(t.EmptyDomain, "row has", "rows have"), NoDomain)
		if c := count(t.Domain, NoDomain); c > t.EmptyDomain {
			n += fmt.Sprintf(", together with the %d whose domain is the text %s", c-t.EmptyDomain, NoDomain)
		}
		notes = append(notes, n+" (give every row its domain, or leave them out)")
	}
	if t.Trimmed > 0 {
		notes = append(notes, fmt.Sprintf("%s model or domain: taken off (responses name models without them)", words.CountAs(t.Trimmed, "row has blanks around its", "rows have blanks around their")))
	}
	if len(t.ID) == t.N() {
		seen := make(map[string]struct{}, len(t.ID))
		again := 0
		for i, id := range t.ID {
			if id == "" {
				continue // no id: nothing to repeat
			}
			key := t.Model[i] + "\x00" + id // as the store keys responses
			if _, ok := seen[key]; ok {
				again++
			}
			seen[key] = struct{}{}
		}
		if again > 0 {
			notes = append(notes, fmt.Sprintf("%s the model and id of an earlier row (the same response in two tables, or twice in one): each copy counts as a row; "+
				"drop the repeats: give each export once (two overlapping exports repeat every response they share), and labels export --labels-only leaves out the responses whose label came with them rather than through the labels table",
				words.CountAs(again, "row repeats", "rows repeat")))
		}
	}
	for _, m := range t.Models() {
		idx := t.Where(func(i int) bool { return t.Model[i] == m })
		var constant []string
		for j, f := range t.Features {
			first, same := t.X[idx[0]*t.D()+j], true
			for _, i := range idx[1:] {
				if t.X[i*t.D()+j] != first {
					same = false
					break
				}
			}
			if same && len(idx) > 1 {
				constant = append(constant, fmt.Sprintf("%s (%g)", f, first))
			}
		}
		switch len(constant) {
		case 0:
		case 1:
			notes = append(notes, fmt.Sprintf("model %q: feature %s is the same in every row: it tells nothing about correctness", m, constant[0]))
		default:
			notes = append(notes, fmt.Sprintf("model %q: features %s are the same in every row: they tell nothing about correctness", m, strings.Join(constant, ", ")))
		}
	}
	return notes
}

// count is the number of elements of v equal to s.
func count(v []string, s string) int {
	n := 0
	for _, x := range v {
		if x == s {
			n++
		}
	}
	return n
}

// Append adds the rows of o, which must have the same features, after
// t's; the reading counts (Skipped, Unterminated, EmptyDomain, ...) add up.
func (t *Table) Append(o *Table) error {
	if !slices.Equal(t.Features, o.Features) {
		return fmt.Errorf("the tables have different features (%s; %s)", strings.Join(t.Features, ","), strings.Join(o.Features, ","))
	}
	if len(t.ID) == t.N() && len(o.ID) == o.N() {
		t.ID = append(t.ID, o.ID...)
	} else {
		t.ID = nil // not known for every row
	}
	t.X = append(t.X, o.X...)
	t.Y = append(t.Y, o.Y...)
	t.Model = append(t.Model, o.Model...)
	t.Domain = append(t.Domain, o.Domain...)
	if t.Skipped == nil {
		t.Skipped = map[string]int{}
	}
	for k, v := range o.Skipped {
		t.Skipped[k] += v
	}
	t.Unterminated = t.Unterminated || o.Unterminated
	t.EmptyDomain += o.EmptyDomain
	t.Trimmed += o.Trimmed
	return nil
}

// Validate checks that t is a table Fit can learn from: at least one
// feature, no feature named twice or named after a key column or the label,
// at least one row, X, Y, Model and Domain of matching lengths (len(X) =
// N*D), labels 0 or 1 and finite features. ReadTable and AppendScored build
// valid tables (once they hold a row).
func (t *Table) Validate() error {
	if t == nil {
		return errors.New("no table (nil): build one with ReadTable, ReadCSV or AppendScored")
	}
	if t.D() == 0 {
		return errors.New("table has no features: set Table.Features to the names of the columns X holds (AppendScored and ReadTable use the 11 profile features when none are named)")
	}
	if err := checkFeatures(t.Features); err != nil {
		return fmt.Errorf("table: %w", err)
	}
	if err := t.checkLengths(); err != nil {
		return err
	}
	if t.N() == 0 {
		return errors.New("table has no rows: add labelled rows (ReadTable, ReadCSV, AppendScored) before fitting")
	}
	for i, y := range t.Y {
		if y != 0 && y != 1 {
			return fmt.Errorf("table row %d: label %g, want 1 (correct) or 0 (incorrect)", i, y)
		}
	}
	for k, v := range t.X {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("table row %d: feature %s is %g: leave out rows with non-finite features (ReadTable and AppendScored skip them)",
				k/t.D(), t.Features[k%t.D()], v)
		}
	}
	return nil
}

// checkLengths checks that X, Y, Model and Domain describe the same rows.
func (t *Table) checkLengths() error {
	n, d := t.N(), t.D()
	if len(t.Model) != n || len(t.Domain) != n {
		return fmt.Errorf("table has %d labels (Y) but %d Model and %d Domain values: give every row its LLM model and domain", n, len(t.Model), len(t.Domain))
	}
	if len(t.X) != n*d {
		return fmt.Errorf("table has %d values in X, want %d rows x %d features = %d (X is row-major, one value per feature per row)", len(t.X), n, d, n*d)
	}
	return nil
}

// N is the number of rows.
func (t *Table) N() int { return len(t.Y) }

// D is the number of features.
func (t *Table) D() int { return len(t.Features) }

// Row returns row i's features (a view into X).
func (t *Table) Row(i int) []float64 { d := t.D(); return t.X[i*d : (i+1)*d : (i+1)*d] }

// Subset returns the rows idx as a new table (copies).
func (t *Table) Subset(idx []int) *Table {
	d := t.D()
	s := &Table{Features: t.Features, X: make([]float64, 0, len(idx)*d), Y: make([]float64, len(idx)),
		Model: make([]string, len(idx)), Domain: make([]string, len(idx))}
	for j, i := range idx {
		s.X = append(s.X, t.Row(i)...)
		s.Y[j], s.Model[j], s.Domain[j] = t.Y[i], t.Model[i], t.Domain[i]
	}
	return s
}

// Select returns the table restricted to the named features (copies).
func (t *Table) Select(features []string) (*Table, error) {
	pos := make([]int, len(features))
	for j, f := range features {
		pos[j] = -1
		for k, g := range t.Features {
			if g == f {
				pos[j] = k
			}
		}
		if pos[j] < 0 {
			return nil, fmt.Errorf("feature %q is not in the table (have %s)", f, strings.Join(t.Features, ","))
		}
	}
	s := &Table{Features: features, X: make([]float64, 0, t.N()*len(features)), Y: t.Y, Model: t.Model, Domain: t.Domain}
	for i := range t.N() {
		r := t.Row(i)
		for _, p := range pos {
			s.X = append(s.X, r[p])
		}
	}
	return s, nil
}

// Where returns the indices of the rows for which keep is true.
func (t *Table) Where(keep func(i int) bool) []int {
	var idx []int
	for i := range t.N() {
		if keep(i) {
			idx = append(idx, i)
		}
	}
	return idx
}

// Models lists the distinct model values, sorted.
func (t *Table) Models() []string { return distinct(t.Model) }

// Domains lists the distinct domain values, sorted.
func (t *Table) Domains() []string { return distinct(t.Domain) }

func distinct(v []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range v {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// ErrMissingFeature is matched (errors.Is) by the error of ReadTable,
// ReadCSV and AppendScored when a requested feature is not a column of the
// input: ask for features the input has (nil = the 11 profile features).
var ErrMissingFeature = errors.New("feature column missing")

// withCase adds to err the columns that differ from the missing names only
// in case ("Mean" for mean): names are case-sensitive.
func withCase(err error, names []string, col map[string]int) error {
	var hints []string
	for _, name := range names {
		for _, c := range slices.Sorted(maps.Keys(col)) {
			if c != name && strings.EqualFold(c, name) {
				hints = append(hints, fmt.Sprintf("%q for %q", c, name))
			}
		}
	}
	if len(hints) == 0 {
		return err
	}
	return fmt.Errorf("%w (did you mean %s? column names are case-sensitive)", err, strings.Join(hints, ", "))
}

// quoteAll quotes each name, joined by commas.
func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// missingFeature is err, also matching ErrMissingFeature; its text is err's.
type missingFeature struct{ err error }

func (e missingFeature) Error() string   { return e.err.Error() }
func (e missingFeature) Unwrap() []error { return []error{e.err, ErrMissingFeature} }

// NoDomain is the domain of rows that carry none.
const NoDomain = "(none)"

// ReadTable reads a labelled table: a CSV (gzip allowed) with columns model,
// domain, correct and the feature columns, or an Arrow IPC file/stream of
// scored.v1 rows. features nil means the 11 profile features; integer
// feature columns (n_tokens) are read as float64. Rows without a label, with
// a non-finite feature or (Arrow) a status other than "ok" are skipped and
// counted in Table.Skipped. A feature the input lacks is an error matching
// ErrMissingFeature; a column named twice, an empty file and a feature the
// estimator could not read when scoring (p_correct, the cluster columns) are
// errors too.
func ReadTable(path string, features []string) (*Table, error) {
	if len(features) == 0 {
		features = schemas.ProfileFeatures
	}
	if err := checkFeatures(features); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, fmt.Errorf("%s is a directory: give a labelled table (a CSV, or Arrow from entrowatch score)", path)
	}
	br := bufio.NewReaderSize(f, 1<<20)
	head, _ := br.Peek(6)
	var t *Table
	switch {
	case bytes.HasPrefix(head, []byte("ARROW1")):
		data, err := io.ReadAll(br)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		t, err = readArrowFile(bytes.NewReader(data), features)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	case len(head) >= 4 && head[0] == 0xff && head[1] == 0xff && head[2] == 0xff && head[3] == 0xff:
		t, err = readArrowStream(br, features)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	default:
		var r io.Reader = br
		if len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b {
			gz, err := gzip.NewReader(br)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			defer gz.Close()
			r = gz
		}
		cb := bufio.NewReader(r)
		if first, _ := cb.Peek(64); isJSONStart(first) {
			return nil, fmt.Errorf("%s holds JSON (responses?), not a labelled table: score the responses first "+
				"(entrowatch score --in %s --out features.csv; a \"correct\" field becomes the label column), then use features.csv", path, path)
		}
		t, err = ReadCSV(cb, features)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if t.N() == 0 {
		if len(t.Skipped) == 0 {
			return nil, fmt.Errorf("%s: no rows after the header", path)
		}
		return nil, fmt.Errorf("%s: no usable labelled rows (skipped: %s)", path, SkippedText(t.Skipped))
	}
	return t, nil
}

// ReadTables reads the labelled tables of paths (ReadTable each, with the
// same features) as one, their rows one after another: a first training
// table and the labels exported from production, for instance.
func ReadTables(paths []string, features []string) (*Table, error) {
	if len(paths) == 0 {
		return nil, errors.New("no labelled table given")
	}
	var t *Table
	for _, p := range paths {
		o, err := ReadTable(p, features)
		if err != nil {
			return nil, err
		}
		if t == nil {
			t = o
			continue
		}
		if err := t.Append(o); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	return t, nil
}

// SkippedText says what Table.Skipped counted, e.g. "4800 no label, 2
// non-finite feature"; a table read from unlabelled responses ("no label")
// gets a hint.
func SkippedText(skipped map[string]int) string {
	keys := make([]string, 0, len(skipped))
	for k := range skipped {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", skipped[k], k)
	}
	s := strings.Join(parts, ", ")
	if skipped["no label"] > 0 {
		s += `; a row needs correct = 1/0 (true/false), which entrowatch score writes when the responses carry a "correct" field`
	}
	return s
}

// checkFeatures refuses feature lists that cannot be meant: a column named
// twice, one of the table's own key columns (the label would predict itself
// perfectly), or a column the estimator writes or that is written after it
// runs (an artifact that reads it could not score a row).
func checkFeatures(features []string) error {
	seen := map[string]bool{}
	for _, f := range features {
		if why := notFeature(f); why != "" {
			return fmt.Errorf("feature %q %s", f, why)
		}
		if seen[f] {
			return fmt.Errorf("feature %q is listed twice", f)
		}
		seen[f] = true
	}
	return nil
}

// notFeature says why column f cannot be a feature, or "".
func notFeature(f string) string {
	switch f {
	case schemas.ColCorrect:
		return "is the label: a model fed the answer predicts it perfectly and estimates nothing"
	case schemas.ColModel, schemas.ColDomain, "id", schemas.ColTraceID:
		return "is a key column, not a numeric feature"
	case schemas.ColPCorrect, schemas.ColEstimatorVersion, schemas.ColStatus:
		return "is written by the estimator: it cannot read it; choose feature columns (e.g. the profile features)"
	case schemas.ColClusterID, schemas.ColClusterLabel, schemas.ColClusterDistance:
		return "is written by the topic tagger, which runs after the estimator: the estimator cannot read it"
	}
	return ""
}

// ReadCSV reads a labelled CSV with a header naming model, domain, correct and
// the features (a missing feature column: ErrMissingFeature). A header that
// names a column twice is refused: which of the two is meant cannot be told.
// Errors give the line of the file (a quoted field may span lines).
func ReadCSV(r io.Reader, features []string) (*Table, error) {
	if err := checkFeatures(features); err != nil {
		return nil, err
	}
	cr := csvin.NewReader(r)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("the file is empty: a labelled table is a CSV whose header line names model, domain, correct and the feature columns, then one row per response")
	}
	if err != nil {
		return nil, fmt.Errorf("reading the CSV header: %w", err)
	}
	header = slices.Clone(header) // ReuseRecord: the next Read overwrites it
	col := map[string]int{}
	for i, h := range header {
		name := strings.TrimSpace(h)
		if j, ok := col[name]; ok && name != "" {
			return nil, fmt.Errorf("column %q appears twice in the CSV header (columns %d and %d): it is not clear which one to read; rename or drop one", name, j+1, i+1)
		}
		col[name] = i
	}
	need := func(name string) (int, error) {
		i, ok := col[name]
		if !ok {
			if sep := otherSeparator(header, name); sep != "" {
				return 0, fmt.Errorf("column %q missing from the CSV header (have %s): the header is separated by %s, but a labelled table must be comma-separated; "+
					"convert the file to commas", name, strings.Join(header, ","), sep)
			}
			return 0, fmt.Errorf("column %q missing from the CSV header (have %s); a labelled table needs model, domain, correct and the feature columns", name, strings.Join(header, ","))
		}
		return i, nil
	}
	mi, err := need(schemas.ColModel)
	if err != nil {
		return nil, err
	}
	di, err := need(schemas.ColDomain)
	if err != nil {
		return nil, err
	}
	ci, err := need(schemas.ColCorrect)
	if err != nil {
		return nil, err
	}
	fi := make([]int, len(features))
	var missing []string
	for j, f := range features {
		var ok bool
		if fi[j], ok = col[f]; !ok {
			missing = append(missing, f)
		}
	}
	switch {
	case len(missing) == 1:
		_, err := need(missing[0])
		return nil, missingFeature{withCase(err, missing, col)}
	case len(missing) > 1:
		// Every one at once, not one per run.
		return nil, missingFeature{withCase(fmt.Errorf("feature columns %s missing from the CSV header (have %s)", quoteAll(missing), strings.Join(header, ",")), missing, col)}
	}
	t := &Table{Features: features, Skipped: map[string]int{}}
	idi, hasID := col["id"]
	if !hasID {
		idi, hasID = col[schemas.ColTraceID]
	}
	intern := map[string]string{}
	in := func(s string) string {
		if v, ok := intern[s]; ok {
			return v
		}
		s = strings.Clone(s)
		intern[s] = s
		return s
	}
	line := func(field int) int { l, _ := cr.FieldPos(field); return l }
	row := make([]float64, len(features))
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the CSV: %w", err) // a csv.ParseError names its line
		}
		y, ok, err := parseLabel(rec[ci])
		if err != nil {
			return nil, fmt.Errorf("line %d: column correct: %w", line(ci), err)
		}
		if !ok {
			t.Skipped["no label"]++
			continue
		}
		bad := false
		for j, k := range fi {
			field := strings.TrimSpace(rec[k])
			v, err := strconv.ParseFloat(field, 64)
			// A number too large for a float64 (1e400) comes back as ±Inf
			// with ErrRange: skipped as non-finite, like "inf".
			if err != nil && field != "" && !errors.Is(err, strconv.ErrRange) {
				return nil, fmt.Errorf("line %d: feature %s: %q is not a number", line(k), features[j], rec[k])
			}
			if field == "" || math.IsNaN(v) || math.IsInf(v, 0) {
				bad = true
			}
			row[j] = v
		}
		if bad {
			t.Skipped["non-finite feature"]++
			continue
		}
		m, d := strings.TrimSpace(rec[mi]), strings.TrimSpace(rec[di])
		if (m != rec[mi] && m != "") || (d != rec[di] && d != "") {
			t.Trimmed++
		}
		if m == "" {
			t.Skipped["no model"]++ // an LLM named "" is never meant
			continue
		}
		if d == "" {
			d = NoDomain
			t.EmptyDomain++
		}
		t.X = append(t.X, row...)
		t.Y = append(t.Y, y)
		t.Model = append(t.Model, in(m))
		t.Domain = append(t.Domain, in(d))
		if hasID {
			t.ID = append(t.ID, strings.Clone(rec[idi]))
		}
	}
	return t, nil
}

// otherSeparator names the separator, semicolons or tabs, of a header that
// holds column name only when split by it (a spreadsheet export not
// separated by commas), or "".
func otherSeparator(header []string, name string) string {
	for _, sep := range []struct{ char, name string }{{";", "semicolons"}, {"\t", "tabs"}} {
		for _, h := range header {
			for _, f := range strings.Split(h, sep.char) {
				if strings.Contains(h, sep.char) && strings.TrimSpace(f) == name {
					return sep.name
				}
			}
		}
	}
	return ""
}

// parseLabel reads a label of column correct: 1/0, true/false, t/f or
// yes/no (also 1.0/0.0), case-insensitive, blanks trimmed; empty means
// unlabelled. The JSON Lines reader of entrowatch score (streams/ingest,
// field "correct") accepts the same spellings as strings, besides JSON
// true/false, 1/0 and null.
func parseLabel(s string) (float64, bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return 0, false, nil
	case "1", "true", "t", "1.0", "yes":
		return 1, true, nil
	case "0", "false", "f", "0.0", "no":
		return 0, true, nil
	}
	return 0, false, fmt.Errorf("%q is not a label (want 1/0, true/false, t/f or yes/no; empty for unlabelled)", s)
}

func readArrowFile(r *bytes.Reader, features []string) (*Table, error) {
	fr, err := ipc.NewFileReader(r, ipc.WithAllocator(memory.DefaultAllocator))
	if err != nil {
		return nil, fmt.Errorf("opening the Arrow file: %w", err)
	}
	defer fr.Close()
	t := &Table{Features: features, Skipped: map[string]int{}}
	for i := range fr.NumRecords() {
		rec, err := fr.RecordBatch(i)
		if err != nil {
			return nil, fmt.Errorf("batch %d: %w", i, err)
		}
		if err := appendBatch(t, rec); err != nil {
			return nil, fmt.Errorf("batch %d: %w", i, err)
		}
	}
	return t, nil
}

func readArrowStream(r io.Reader, features []string) (*Table, error) {
	er := &eofReader{r: r}
	rr, err := ipc.NewReader(er, ipc.WithAllocator(memory.DefaultAllocator))
	if err != nil {
		return nil, fmt.Errorf("opening the Arrow stream: %w", err)
	}
	defer rr.Release()
	t := &Table{Features: features, Skipped: map[string]int{}}
	for i := 0; rr.Next(); i++ {
		if err := appendBatch(t, rr.RecordBatch()); err != nil {
			return nil, fmt.Errorf("batch %d: %w", i, err)
		}
	}
	if err := rr.Err(); err != nil { // nil at a clean end: an EOF inside a batch is a truncated file
		return nil, err
	}
	// arrow-go stops at the end-of-stream marker without reading further;
	// it reached the end of the input only if the marker is missing.
	t.Unterminated = er.eof
	return t, nil
}

// eofReader records that its reader returned io.EOF.
type eofReader struct {
	r   io.Reader
	eof bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.eof = true
	}
	return n, err
}

// AppendScored adds the labelled rows with status "ok" and finite features of
// a scored.v1 batch to t; other rows are counted in t.Skipped. t.Features
// names the columns read (float64, or integer or float32 read as float64);
// when it is empty (a new Table{}), it becomes the 11 profile features, as in
// ReadTable. A batch whose schema names a column twice is refused. It does
// not retain rec.
func (t *Table) AppendScored(rec arrow.RecordBatch) error {
	if rec == nil {
		return errors.New("table: AppendScored of a nil batch")
	}
	if t.D() == 0 {
		if len(t.X) > 0 {
			return errors.New("table holds values in X but names no features: set Table.Features")
		}
		t.Features = slices.Clone(schemas.ProfileFeatures)
	}
	if err := checkFeatures(t.Features); err != nil {
		return fmt.Errorf("table: %w", err)
	}
	if err := t.checkLengths(); err != nil {
		return err
	}
	if t.Skipped == nil {
		t.Skipped = map[string]int{}
	}
	return appendBatch(t, rec)
}

// appendBatch adds the labelled "ok" rows of a scored.v1 batch. Integer and
// float32 feature columns (n_tokens) are read as float64.
func appendBatch(t *Table, rec arrow.RecordBatch) error {
	s := rec.Schema()
	if err := uniqueFields(s); err != nil {
		return err
	}
	str := func(name string) (*array.String, error) {
		i, err := schemas.Index(s, name)
		if err != nil {
			return nil, err
		}
		a, ok := rec.Column(i).(*array.String)
		if !ok {
			return nil, fmt.Errorf("column %q is %s, want utf8", name, rec.Column(i).DataType())
		}
		return a, nil
	}
	model, err := str(schemas.ColModel)
	if err != nil {
		return err
	}
	var ids *array.String
	if len(s.FieldIndices(schemas.ColTraceID)) > 0 {
		if ids, err = str(schemas.ColTraceID); err != nil {
			return err
		}
	}
	domain, err := str(schemas.ColDomain)
	if err != nil {
		return err
	}
	var status *array.String
	if len(s.FieldIndices(schemas.ColStatus)) > 0 {
		if status, err = str(schemas.ColStatus); err != nil {
			return err
		}
	}
	ci, err := schemas.Index(s, schemas.ColCorrect)
	if err != nil {
		return err
	}
	correct, ok := rec.Column(ci).(*array.Boolean)
	if !ok {
		return fmt.Errorf("column correct is %s, want bool", rec.Column(ci).DataType())
	}
	cols := make([]*array.Float64, len(t.Features))
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for j, f := range t.Features {
		i, err := schemas.Index(s, f)
		if err != nil {
			return missingFeature{fmt.Errorf("feature %q: %w", f, err)}
		}
		if cols[j], err = asFloat64(memory.DefaultAllocator, rec.Column(i)); err != nil {
			return fmt.Errorf("feature %q: %w", f, err)
		}
	}
	for r := range int(rec.NumRows()) {
		if status != nil && status.Value(r) != schemas.StatusOK {
			t.Skipped["status "+status.Value(r)]++
			continue
		}
		if correct.IsNull(r) {
			t.Skipped["no label"]++
			continue
		}
		bad := false
		n := len(t.X)
		for _, c := range cols {
			v := c.Value(r)
			if c.IsNull(r) || math.IsNaN(v) || math.IsInf(v, 0) {
				bad = true
			}
			t.X = append(t.X, v)
		}
		if bad {
			t.X = t.X[:n]
			t.Skipped["non-finite feature"]++
			continue
		}
		y := 0.0
		if correct.Value(r) {
			y = 1
		}
		// Blanks around a name are taken off, as from a CSV.
		m := strings.TrimSpace(model.Value(r))
		dv := ""
		if domain.IsValid(r) {
			dv = domain.Value(r)
		}
		dt := strings.TrimSpace(dv)
		if (m != model.Value(r) && m != "") || (dt != dv && dt != "") {
			t.Trimmed++
		}
		if m == "" {
			t.Skipped["no model"]++
			t.X = t.X[:n]
			continue
		}
		d := NoDomain
		if dt != "" {
			d = strings.Clone(dt)
		} else {
			t.EmptyDomain++
		}
		t.Y = append(t.Y, y)
		t.Model = append(t.Model, strings.Clone(m))
		if ids != nil {
			t.ID = append(t.ID, strings.Clone(ids.Value(r)))
		}
		t.Domain = append(t.Domain, d)
	}
	return nil
}

// uniqueFields refuses a schema that names a column twice: which of the two
// is meant cannot be told.
func uniqueFields(s *arrow.Schema) error {
	for i, f := range s.Fields() {
		if idx := s.FieldIndices(f.Name); len(idx) > 1 && idx[0] == i {
			return fmt.Errorf("column %q appears twice in the Arrow schema (fields %d and %d): it is not clear which one to read; rename or drop one", f.Name, idx[0], idx[1])
		}
	}
	return nil
}

// asFloat64 returns a numeric column (float64, float32 or integer, e.g.
// scored.v1's n_tokens) as float64 values with the same nulls. The caller
// releases the result: a float64 column is a, retained; other types are
// converted into a new array allocated from mem.
func asFloat64(mem memory.Allocator, a arrow.Array) (*array.Float64, error) {
	switch c := a.(type) {
	case *array.Float64:
		c.Retain()
		return c, nil
	case *array.Float32:
		return castFloat64(mem, c, c.Float32Values()), nil
	case *array.Int8:
		return castFloat64(mem, c, c.Int8Values()), nil
	case *array.Int16:
		return castFloat64(mem, c, c.Int16Values()), nil
	case *array.Int32:
		return castFloat64(mem, c, c.Int32Values()), nil
	case *array.Int64:
		return castFloat64(mem, c, c.Int64Values()), nil
	case *array.Uint8:
		return castFloat64(mem, c, c.Uint8Values()), nil
	case *array.Uint16:
		return castFloat64(mem, c, c.Uint16Values()), nil
	case *array.Uint32:
		return castFloat64(mem, c, c.Uint32Values()), nil
	case *array.Uint64:
		return castFloat64(mem, c, c.Uint64Values()), nil
	}
	return nil, fmt.Errorf("column is %s, want a number (float64, float32 or an integer)", a.DataType())
}

// numericType reports whether asFloat64 reads columns of type t.
func numericType(t arrow.DataType) bool {
	switch t.ID() {
	case arrow.FLOAT64, arrow.FLOAT32, arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return true
	}
	return false
}

func castFloat64[T int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64 | float32](mem memory.Allocator, a arrow.Array, v []T) *array.Float64 {
	b := array.NewFloat64Builder(mem)
	defer b.Release()
	b.Reserve(len(v))
	for i, x := range v {
		if a.IsNull(i) {
			b.UnsafeAppendBoolToBitmap(false)
		} else {
			b.UnsafeAppend(float64(x))
		}
	}
	return b.NewFloat64Array()
}

// isJSONStart reports a text that starts, after blanks and a byte-order
// mark, with a JSON object or array, or a server-sent event.
func isJSONStart(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n\ufeff")
	return len(b) > 0 && (b[0] == '{' || b[0] == '[') || bytes.HasPrefix(b, []byte("data:"))
}
