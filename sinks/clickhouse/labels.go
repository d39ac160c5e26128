package clickhouse

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/entrowatch/entrowatch/schemas"
)

// LabelRequest is one response to send to labelers.
type LabelRequest struct {
	TraceID     string    `json:"trace_id"`
	Model       string    `json:"model"`
	Domain      string    `json:"domain"`
	PCorrect    float64   `json:"p_correct"`
	Uncertainty float64   `json:"uncertainty"` // |p_correct - 0.5|, smaller is more uncertain
	Stratum     uint8     `json:"stratum"`     // p_correct fifth, 0..4
	StratumRank uint64    `json:"stratum_rank"`
	Priority    float64   `json:"priority"`    // the domain's labeling_queue priority
	ResponseTS  time.Time `json:"response_ts"` // the response's time; not "ts", which labels import reads as the label's
	Prompt      string    `json:"prompt,omitempty"`
	Batch       string    `json:"batch"`
	ExpiresAt   time.Time `json:"expires_at"` // when the request lapses and the response may be requested again
}

// DefaultRequestExpiry is how long a label request keeps its response out
// of the labeling queue (label_requests.expires_at, migration 013).
const DefaultRequestExpiry = 7 * 24 * time.Hour

// RequestLabels takes up to perDomain responses from each of the top
// domains of labeling_queue (those with open responses), in
// labeling_candidates order, records them in label_requests so later calls
// skip them, and returns them.
func RequestLabels(ctx context.Context, conn driver.Conn, db string, domains, perDomain int, batch string, now time.Time, expireAfter time.Duration) ([]LabelRequest, error) {
	if domains <= 0 || perDomain <= 0 {
		return nil, fmt.Errorf("labels requests: domains (%d) and per-domain (%d) must be positive", domains, perDomain)
	}
	if expireAfter <= 0 {
		return nil, fmt.Errorf("labels requests: expire-after %v must be positive", expireAfter)
	}
	expires := now.Add(expireAfter).UTC().Truncate(time.Second)
	q := fmt.Sprintf(`SELECT model, domain, toFloat64(priority), toUInt8(stratum), toUInt64(stratum_rank), trace_id, toFloat64(p_correct), toFloat64(uncertainty), ts, prompt
FROM %[1]s.labeling_candidates
WHERE (model, domain) IN (SELECT model, domain FROM %[1]s.labeling_queue WHERE n_open > 0 ORDER BY priority DESC, model, domain LIMIT %[2]d)
ORDER BY priority DESC, model, domain, stratum_rank, stratum, trace_id
LIMIT %[3]d BY model, domain`, db, domains, perDomain)
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("labels requests: querying %s.labeling_candidates: %w", db, err)
	}
	defer rows.Close()
	var out []LabelRequest
	for rows.Next() {
		var r LabelRequest
		if err := rows.Scan(&r.Model, &r.Domain, &r.Priority, &r.Stratum, &r.StratumRank, &r.TraceID, &r.PCorrect, &r.Uncertainty, &r.ResponseTS, &r.Prompt); err != nil {
			return nil, fmt.Errorf("labels requests: %w", err)
		}
		r.Batch, r.ExpiresAt = batch, expires
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("labels requests: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".label_requests (trace_id, model, domain, requested_at, batch, expires_at)")
	if err != nil {
		return nil, fmt.Errorf("labels requests: recording: %w", err)
	}
	for _, r := range out {
		if err := b.Append(r.TraceID, r.Model, r.Domain, now.UTC(), batch, expires); err != nil {
			_ = b.Abort()
			return nil, fmt.Errorf("labels requests: recording: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return nil, fmt.Errorf("labels requests: recording: %w", err)
	}
	return out, nil
}

// BatchName is a name for a request batch made at now that label_requests
// does not hold yet: the time to the millisecond (20260301T120000.123Z),
// with -2, -3, .. appended while that is taken.
func BatchName(ctx context.Context, conn driver.Conn, db string, now time.Time) (string, error) {
	base := now.UTC().Format("20060102T150405.000Z")
	for i := 1; ; i++ {
		name := base
		if i > 1 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".label_requests WHERE batch = ?", name).Scan(&n); err != nil {
			return "", fmt.Errorf("labels requests: naming the batch: %w", err)
		}
		if n == 0 {
			return name, nil
		}
	}
}

// QueueState counts what the labeling queue draws from; it says why
// RequestLabels found nothing.
type QueueState struct {
	Rows      uint64 // responses in scored (deduplicated)
	Scored    uint64 // of them, valid with a p_correct (scored_ok)
	Lookback  uint64 // of those, within LookbackS before the newest response
	Labelled  uint64 // of the lookback, labelled (labels table or the trace's correct)
	Requested uint64 // of the lookback, requested and not labelled
	LookbackS uint64 // alarm_settings.queue_lookback_s
}

// Open is how many responses of the lookback could be requested.
func (s QueueState) Open() uint64 { return s.Lookback - s.Labelled - s.Requested }

// Reason says, for an operator, why nothing can be requested (when Open is
// 0) or what there is.
func (s QueueState) Reason(db string) string {
	switch {
	case s.Rows == 0:
		return fmt.Sprintf("%s.scored holds no responses yet", db)
	case s.Scored == 0:
		return fmt.Sprintf("none of the %d responses in %s.scored is valid with a p_correct; only estimated responses are queued (configure an estimator: entrowatch run's estimator key)", s.Rows, db)
	case s.Open() == 0:
		return fmt.Sprintf("every one of the %d responses in the queue lookback (the %d s before the newest response, alarm_settings.queue_lookback_s) is already labelled (%d) or requested (%d); import labels, or wait for new traffic",
			s.Lookback, s.LookbackS, s.Labelled, s.Requested)
	}
	return fmt.Sprintf("%d of the %d responses in the queue lookback are open", s.Open(), s.Lookback)
}

// LabelQueueState reads QueueState from db.
func LabelQueueState(ctx context.Context, conn driver.Conn, db string) (QueueState, error) {
	var s QueueState
	q := fmt.Sprintf(`SELECT
    (SELECT count() FROM %[1]s.scored FINAL),
    (SELECT count() FROM %[1]s.scored_ok),
    toUInt64(count()), toUInt64(countIf(labelled = 1)), toUInt64(countIf(labelled = 0 AND requested = 1)),
    toUInt64((SELECT argMax(queue_lookback_s, updated_at) FROM %[1]s.alarm_settings))
FROM %[1]s.label_status`, db)
	if err := conn.QueryRow(ctx, q).Scan(&s.Rows, &s.Scored, &s.Lookback, &s.Labelled, &s.Requested, &s.LookbackS); err != nil {
		return s, fmt.Errorf("labels requests: reading the queue state of %s: %w", db, err)
	}
	return s, nil
}

// Label is label.v1: the ground truth for one trace.
type Label struct {
	TraceID string    `json:"trace_id"`
	Correct bool      `json:"correct"`
	Source  string    `json:"source"`
	TS      time.Time `json:"ts"`
}

// InsertLabels stores labels; the newest label (by TS) of a trace wins, of
// labels with one TS the later in labels (see LabelVersion), and
// re-importing the same labels changes nothing.
func InsertLabels(ctx context.Context, conn driver.Conn, db string, labels []Label) error {
	if len(labels) == 0 {
		return nil
	}
	cols, err := schemas.ClickHouseColumns(schemas.Label)
	if err != nil {
		return err
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".labels ("+schemas.ClickHouseColumnList(cols)+", version)")
	if err != nil {
		return fmt.Errorf("labels import: %w", err)
	}
	for i, l := range labels {
		var c uint8
		if l.Correct {
			c = 1
		}
		ms := l.TS.UnixMilli()
		if err := b.Append(l.TraceID, c, l.Source, time.Unix(ms/1000, 0).UTC(), uint16(ms%1000), LabelVersion(l.TS, i, l.Correct)); err != nil {
			_ = b.Abort()
			return fmt.Errorf("labels import: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("labels import: inserting %d labels: %w", len(labels), err)
	}
	return nil
}

// Imported is what ImportLabels did.
type Imported struct {
	Stored   int // labels inserted
	Skipped  int // labels without ts whose trace_id, correct and source were stored before
	Unscored int // of the stored labels, those whose trace_id matches no response in scored yet
}

// ImportLabels stores labels read from a file (by ReadLabels with a zero
// now) so that importing the file again changes nothing. Labels with a ts
// are stored as they are: the same file gives the same versions. A label
// without one (a zero TS) is skipped when the trace has had a label with
// its correct and source (label_seen, migration 014, which merges of
// labels do not thin out); the others get now. Stored labels
// whose trace matches no response in scored are counted, not refused: a
// label may arrive before its response. Nothing is stored when a query
// fails. Each query reads at most idChunkIDs trace ids.
func ImportLabels(ctx context.Context, conn driver.Conn, db string, labels []Label, now time.Time) (Imported, error) {
	var res Imported
	var undated []string
	for _, l := range labels {
		if l.TS.IsZero() {
			undated = append(undated, l.TraceID)
		}
	}
	type key struct {
		id, source string
		correct    bool
	}
	stored := map[key]bool{}
	err := forIDChunks(undated, func(chunk ch.GroupSet) error {
		rows, err := conn.Query(ctx, "SELECT DISTINCT trace_id, correct, source FROM "+db+".label_seen WHERE trace_id IN ?", chunk)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k key
			var c uint8
			if err := rows.Scan(&k.id, &c, &k.source); err != nil {
				return err
			}
			k.correct = c == 1
			stored[k] = true
		}
		return rows.Err()
	})
	if err != nil {
		return res, fmt.Errorf("labels import: reading the stored labels of %s: %w", db, err)
	}
	keep := make([]Label, 0, len(labels))
	for _, l := range labels {
		if l.TS.IsZero() {
			if stored[key{l.TraceID, l.Source, l.Correct}] {
				res.Skipped++
				continue
			}
			l.TS = now.UTC()
		}
		keep = append(keep, l)
	}
	ids := make([]string, len(keep))
	for i, l := range keep {
		ids[i] = l.TraceID
	}
	scored := map[string]bool{}
	err = forIDChunks(ids, func(chunk ch.GroupSet) error {
		return collectIDs(ctx, conn, scored, "SELECT DISTINCT trace_id FROM "+db+".scored WHERE trace_id IN ?", chunk)
	})
	if err != nil {
		return res, fmt.Errorf("labels import: reading the responses of %s.scored: %w", db, err)
	}
	for _, id := range ids {
		if !scored[id] {
			res.Unscored++
		}
	}
	if err := InsertLabels(ctx, conn, db, keep); err != nil {
		return res, err
	}
	res.Stored = len(keep)
	return res, nil
}

// idChunkIDs and idChunkBytes bound the trace ids of one IN list: ClickHouse
// refuses a query over max_query_size (256 KiB by default), and a file may
// hold 100,000 labels.
const (
	idChunkIDs   = 2000
	idChunkBytes = 64 << 10 // quoted, as the driver sends them
)

// forIDChunks calls fn with the distinct ids, a chunk at a time.
func forIDChunks(ids []string, fn func(ch.GroupSet) error) error {
	seen := make(map[string]bool, len(ids))
	var chunk []any
	size := 0
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		err := fn(ch.GroupSet{Value: chunk})
		chunk, size = nil, 0
		return err
	}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		n := 2*len(id) + 4 // every byte escaped at worst, quotes and ", "
		if len(chunk) == idChunkIDs || (len(chunk) > 0 && size+n > idChunkBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		chunk = append(chunk, id)
		size += n
	}
	return flush()
}

// LabelVersion is the labels table's version of the seq-th label of an
// insert (migration 009): (ts in ms) * 2^21 + seq * 2 + correct. The label
// with the largest version of a trace is its label, in labels_latest and
// after merges alike: the newest ts wins, at an equal ts the later label of
// one insert (a message, file or POST body: labels without a ts all get the
// time they were read), then correct. seq beyond 2^20 - 1 counts as 2^20 - 1.
func LabelVersion(ts time.Time, seq int, correct bool) uint64 {
	const maxSeq = 1<<20 - 1
	v := uint64(max(ts.UnixMilli(), 0))<<21 | uint64(min(max(seq, 0), maxSeq))<<1
	if correct {
		v |= 1
	}
	return v
}

// ReadLabels parses labels from CSV (header with trace_id and correct;
// source and ts optional; other columns ignored) or JSON Lines (objects with
// the same keys). correct is one of correctValues (any case); ts is RFC 3339
// or Unix seconds or milliseconds, from 2000 to 2100 (see labelTS), default
// now (the zero time when now is zero: ImportLabels stamps those); source
// defaults to defaultSource. Errors name the line.
func ReadLabels(r io.Reader, defaultSource string, now time.Time) ([]Label, error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(512)
	if t := bytes.TrimLeft(head, " \t\r\n\ufeff"); len(t) > 0 && t[0] == '{' {
		return readLabelsJSON(br, defaultSource, now)
	}
	return readLabelsCSV(br, defaultSource, now)
}

func readLabelsJSON(r io.Reader, defaultSource string, now time.Time) ([]Label, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	var out []Label
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var v struct {
			TraceID string          `json:"trace_id"`
			Correct json.RawMessage `json:"correct"`
			Source  string          `json:"source"`
			TS      json.RawMessage `json:"ts"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("line %d: not a JSON object: %w", line, err)
		}
		l, err := makeLabel(v.TraceID, jsonText(v.Correct), v.Source, jsonText(v.TS), defaultSource, now)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

func readLabelsCSV(r io.Reader, defaultSource string, now time.Time) ([]Label, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("line 1: %w", err)
	}
	idx := map[string]int{}
	for i, h := range header {
		name := strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		if j, dup := idx[name]; dup && name != "" {
			return nil, fmt.Errorf("line 1: column %q appears twice in the header (columns %d and %d): it is not clear which one to read; rename or drop one", name, j+1, i+1)
		}
		idx[name] = i
	}
	if _, ok := idx[schemas.ColTraceID]; !ok {
		return nil, fmt.Errorf("line 1: header %v lacks trace_id (need trace_id,correct[,source,ts])", header)
	}
	if _, ok := idx[schemas.ColCorrect]; !ok {
		return nil, fmt.Errorf("line 1: header %v lacks correct (need trace_id,correct[,source,ts])", header)
	}
	get := func(rec []string, name string) string {
		if i, ok := idx[name]; ok && i < len(rec) {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	var out []Label
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err // csv.ParseError names its line
		}
		l, err := makeLabel(get(rec, schemas.ColTraceID), get(rec, schemas.ColCorrect), get(rec, schemas.ColSource), get(rec, schemas.ColTS), defaultSource, now)
		if err != nil {
			line, _ := cr.FieldPos(0) // the record's first line, counting lines inside quoted fields
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, l)
	}
}

// jsonText is a JSON value as the text makeLabel reads: a string decoded
// (escapes resolved, blanks trimmed), a number or literal as written, null
// and absent as "".
func jsonText(raw json.RawMessage) string {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return strings.TrimSpace(str)
	}
	return strings.TrimSpace(string(raw))
}

// correctValues is what a label's correct may be, for error messages.
const correctValues = "true/false, t/f, yes/no or 1/0 (any case; the spellings train's CSV takes)"

// maxSourceBytes bounds a label's source (a reviewer, a team, a tool).
const maxSourceBytes = 256

func makeLabel(id, correct, source, ts, defaultSource string, now time.Time) (Label, error) {
	if id == "" {
		return Label{}, errors.New("empty trace_id")
	}
	if len(id) > schemas.MaxTraceIDBytes {
		return Label{}, fmt.Errorf("trace_id %.40q... of %d bytes, more than the %d a response id may have (entrowatch ingest refuses longer ones)", id, len(id), schemas.MaxTraceIDBytes)
	}
	if len(source) > maxSourceBytes {
		return Label{}, fmt.Errorf("trace %s: source of %d bytes, more than %d", id, len(source), maxSourceBytes)
	}
	l := Label{TraceID: id, Source: source, TS: now.UTC()}
	if l.Source == "" {
		l.Source = defaultSource
	}
	switch strings.ToLower(strings.TrimSpace(correct)) {
	case "true", "t", "yes", "1", "1.0":
		l.Correct = true
	case "false", "f", "no", "0", "0.0":
	case "", "null":
		return Label{}, fmt.Errorf("trace %s: correct is missing; want %s", id, correctValues)
	default:
		return Label{}, fmt.Errorf("trace %s: correct is %q; want %s", id, correct, correctValues)
	}
	if ts != "" && ts != "null" {
		t, err := labelTS(ts)
		if err != nil {
			return Label{}, fmt.Errorf("trace %s: %w", id, err)
		}
		l.TS = t
	}
	return l, nil
}

// tsForms is what a label's ts may be, for error messages.
const tsForms = "want RFC 3339 (e.g. 2026-03-01T12:00:00Z) or Unix seconds or milliseconds, " + schemas.EpochRange + ", or no ts (the time the label is read)"

// labelTS reads a label's ts: RFC 3339, or Unix seconds or milliseconds
// (told apart by their range, as a response's created is), all in the range
// of schemas.InEpochRange. Outside it ClickHouse's DateTime would wrap the
// time (2200 stored as 2063, winning over every later label; -1000 as 1970).
func labelTS(ts string) (time.Time, error) {
	if v, err := strconv.ParseFloat(ts, 64); err == nil {
		if ms, ok := schemas.EpochMillis(v); ok {
			return time.UnixMilli(ms).UTC(), nil
		}
		return time.Time{}, fmt.Errorf("ts %s is out of range: %s", ts, tsForms)
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return time.Time{}, fmt.Errorf("ts %q is not a time: %s", ts, tsForms)
	}
	if !schemas.InEpochRange(t) {
		return time.Time{}, fmt.Errorf("ts %s is out of range: %s", ts, tsForms)
	}
	return t.UTC(), nil
}

// LabelsFromRecord reads a label.v1 batch.
func LabelsFromRecord(rec arrow.RecordBatch) ([]Label, error) {
	sc := rec.Schema()
	col := func(name string) (arrow.Array, error) {
		i, err := schemas.Index(sc, name)
		if err != nil {
			return nil, fmt.Errorf("label batch: %w", err)
		}
		return rec.Column(i), nil
	}
	var ids, srcs *array.String
	var corr *array.Boolean
	var tss *array.Timestamp
	for _, c := range []struct {
		name string
		dst  any
	}{{schemas.ColTraceID, &ids}, {schemas.ColCorrect, &corr}, {schemas.ColSource, &srcs}, {schemas.ColTS, &tss}} {
		a, err := col(c.name)
		if err != nil {
			return nil, err
		}
		ok := false
		switch d := c.dst.(type) {
		case **array.String:
			*d, ok = a.(*array.String)
		case **array.Boolean:
			*d, ok = a.(*array.Boolean)
		case **array.Timestamp:
			*d, ok = a.(*array.Timestamp)
		}
		if !ok {
			return nil, fmt.Errorf("label batch: column %s has type %s, want label.v1's", c.name, a.DataType())
		}
	}
	unit := tss.DataType().(*arrow.TimestampType).Unit
	out := make([]Label, 0, rec.NumRows())
	for i := range int(rec.NumRows()) {
		if ids.IsNull(i) || corr.IsNull(i) {
			return nil, fmt.Errorf("label batch row %d: trace_id and correct must not be null", i)
		}
		if ids.Value(i) == "" {
			return nil, fmt.Errorf("label batch row %d: empty trace_id", i)
		}
		ts := tss.Value(i).ToTime(unit).UTC()
		if !schemas.InEpochRange(ts) {
			return nil, fmt.Errorf("label batch row %d: trace %s: ts %s is not %s (a producer's unit or clock is wrong)", i, ids.Value(i), ts.Format(time.RFC3339Nano), schemas.EpochRange)
		}
		out = append(out, Label{TraceID: ids.Value(i), Correct: corr.Value(i), Source: srcs.Value(i), TS: ts})
	}
	return out, nil
}
